"""Serving's library side: a registered version exported as a bundle, the serving config, the
prediction log, the score cache, fallback answers and registered example requests.
"""
