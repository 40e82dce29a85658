"""The rollout function: an approved model package in the registry becomes the live model on EKS.

This folder (cdk/rollout/) is the Lambda code asset, so the package depends on the standard library and
boto3 only (both in the Lambda Python runtime). The CDK stacks import ``constants`` from it, so the names
the Deployment is built with and the names the function patches are the same objects.
"""
