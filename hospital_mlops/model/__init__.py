"""A model: training, evaluation, the scoring core of one request, explanations and reason
codes, exact TreeSHAP, and real example requests.
"""
