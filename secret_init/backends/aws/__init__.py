"""The AWS backends: ``aws-secretsmanager`` and ``aws-ssm``.

Both share one botocore session per process (``session``), the Region order (ARN, the
backend's ``region``, AWS_REGION, AWS_DEFAULT_REGION, the config file) and the
deadline-bounded retries in ``retry``. Modules here import only the standard library at
load time; botocore is imported when a fetch starts.
"""
