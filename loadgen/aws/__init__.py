"""The AWS side of the run: sessions and API accounting, service discovery, IAM policies.

Only modules that talk to AWS import boto3, so a local run never needs it.
"""
