"""Security: API tokens and the access audit, the process-wide egress guard, and HMAC key
rotation.
"""
