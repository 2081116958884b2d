"""boto3 sessions and clients the way the AWS CLI resolves them, with every API call counted.

Credentials come from the standard chain (environment, shared files, SSO, instance roles); the
region and named profile follow the AWS CLI: ``--region`` and ``--profile`` win over
``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / ``AWS_PROFILE`` and the profile's own region. Endpoint
overrides (``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>``) are honoured by botocore
itself. Nothing here logs or stores a credential.
"""

from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import boto3
import botocore.exceptions
from botocore.config import Config

from scalefinder.core.errors import InfrastructureError, InputError

#: botocore's adaptive mode retries throttling with backoff and slows the client down on its own.
MAX_ATTEMPTS = 8

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "SlowDown", "PriorRequestNotComplete",
})
DENIED_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
    "AuthFailure", "SignatureDoesNotMatch",
})
#: the credentials themselves are expired or not valid: no policy would help, new credentials will
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId"})
NOT_FOUND_CODES = frozenset({"ServiceNotFoundException", "ClusterNotFoundException", "ServiceNotActiveException",
                             "TargetGroupNotFound", "ObjectNotFoundException", "QueueDoesNotExist"})


@dataclass
class ApiUsage:
    """What a component asked of AWS: operations, HTTP attempts, throttled answers, metrics requested."""

    calls: dict[str, int] = field(default_factory=dict)  # "service:Operation" -> completed calls
    attempts: int = 0
    throttled: int = 0
    metrics_requested: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def retries(self) -> int:
        return max(self.attempts - self.total_calls, 0)

    def count_call(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1

    def count_attempt(self, throttled: bool) -> None:
        with self._lock:
            self.attempts += 1
            self.throttled += int(throttled)

    def count_metrics(self, count: int) -> None:
        with self._lock:
            self.metrics_requested += count

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            calls = dict(sorted(self.calls.items()))
        return {
            "api_calls": sum(calls.values()),
            "api_calls_by_operation": calls,
            "retries": self.retries,
            "throttled": self.throttled,
            "metrics_requested": self.metrics_requested,
            # GetMetricData is billed per metric requested: about USD 0.01 per 1,000.
            "estimated_cost_usd": round(self.metrics_requested * 0.01 / 1000, 6),
        }


class CredentialRedactor(logging.Filter):
    """Blanks credentials out of the AWS SDK's debug logs (signed requests, headers, STS answers).

    Only the command line decides where logs go and at which level, but at debug level botocore
    would write access key ids, session tokens and assumed-role secrets into them.
    """

    PATTERNS = [
        (re.compile(r"(Credential=)[^/\s,]+"), r"\1<redacted>"),
        (re.compile(r"(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,}]+", re.I), r"\1<redacted>"),
        (re.compile(r"(<(SecretAccessKey|SessionToken|AccessKeyId)>)[^<]*", re.I), r"\1<redacted>"),
        (re.compile(r"((SecretAccessKey|SessionToken|AccessKeyId|aws_secret_access_key|aws_session_token|"
                    r"aws_access_key_id)['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,}]+", re.I), r"\1<redacted>"),
    ]
    SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for pattern, replacement in self.PATTERNS:
            redacted = pattern.sub(replacement, redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True

    @classmethod
    def guard_sdk_loggers(cls) -> None:
        """Attach the filter to every SDK logger that exists now (they are created as modules load)."""
        for name in list(logging.Logger.manager.loggerDict):
            if name.split(".")[0] in cls.SDK_LOGGERS:
                logger = logging.getLogger(name)
                if not any(isinstance(f, cls) for f in logger.filters):
                    logger.addFilter(cls())


class AwsClients:
    """One boto3 session and its clients, with retries set to adaptive and usage counted."""

    def __init__(self, region: str | None = None, profile: str | None = None, usage: ApiUsage | None = None):
        try:
            self.session = boto3.Session(region_name=region or None, profile_name=profile or None)
        except botocore.exceptions.ProfileNotFound:
            raise InputError(f"AWS profile '{profile}' is not in your AWS config or credentials file") from None
        self.region = self.session.region_name
        if not self.region:
            raise InputError("no AWS region given: pass --region, set AWS_REGION, or set region in the profile")
        self.usage = usage or ApiUsage()
        self._clients: dict[str, Any] = {}
        self._config = Config(retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS},
                              connect_timeout=10, read_timeout=30)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            client = self.session.client(service, config=self._config)
            events = client.meta.events
            events.register("after-call.*.*", self._after_call)
            events.register("after-call-error.*.*", self._after_call_error)
            events.register("response-received.*.*", self._response_received)
            # once per call, page or not (botocore retries below this event, so never per retry)
            events.register("before-parameter-build.cloudwatch.GetMetricData", self._metrics_requested)
            self._clients[service] = client
            CredentialRedactor.guard_sdk_loggers()
        return self._clients[service]

    def _after_call(self, model: Any, **_: Any) -> None:
        self.usage.count_call(f"{iam_prefix(model.service_model.service_name)}:{model.name}")

    def _after_call_error(self, event_name: str, **_: Any) -> None:
        # after-call-error.<service-id>.<Operation>: the call never got an answer at all
        _, service, operation = event_name.split(".", 2)
        self.usage.count_call(f"{iam_prefix(service)}:{operation}")

    def _metrics_requested(self, params: dict, **_: Any) -> None:
        """GetMetricData is billed by the metrics each request asks for, every page included."""
        self.usage.count_metrics(len(params.get("MetricDataQueries") or ()))

    def _response_received(self, parsed_response: dict | None = None, **_: Any) -> None:
        code = ((parsed_response or {}).get("Error") or {}).get("Code")
        self.usage.count_attempt(throttled=code in THROTTLING_CODES)


def call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """Call ``client.<operation>(**params)`` and turn AWS failures into one clear error line."""
    with _clear_errors(client, operation, params):
        return getattr(client, operation)(**params)


def pages(client: Any, operation: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Each answer of a pageable operation, through botocore's paginator, errors as ``call``'s.

    The paginator follows the operation's own token fields (NextToken, Marker...) and refuses a
    token that comes back twice. One page is one API call, counted like any other.
    """
    with _clear_errors(client, operation, params):
        yield from client.get_paginator(operation).paginate(**params)


@contextmanager
def _clear_errors(client: Any, operation: str, params: dict[str, Any]) -> Iterator[None]:
    action = f"{iam_prefix(client.meta.service_model.service_name)}:{_pascal(operation)}"
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Error"), error.get("Message", "")
        if code in EXPIRED_CODES:
            raise InfrastructureError(
                f"AWS refused the credentials for {action} ({code}: {message}): they have expired or are "
                f"not valid; refresh them (e.g. `aws sso login`, or new session credentials) and run the "
                f"command again"
            ) from None
        if code in DENIED_CODES:
            raise InfrastructureError(
                f"AWS denied {action} ({code}: {message}); grant the policy printed by "
                f"`scalefinder iam-policy PROFILE`"
            ) from None
        if code in THROTTLING_CODES:
            raise InfrastructureError(f"AWS kept throttling {action} after {MAX_ATTEMPTS} attempts; try again later") from None
        if code in NOT_FOUND_CODES:
            raise InfrastructureError(f"{_subject(params)} does not exist in region {client.meta.region_name} "
                                      f"({action}: {code})") from None
        raise InfrastructureError(f"{action} failed for {_subject(params)} ({code}: {message})") from None
    except botocore.exceptions.NoCredentialsError:
        raise InfrastructureError(
            "no AWS credentials found: configure them as for the AWS CLI (aws configure, AWS_PROFILE, or environment)"
        ) from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError) as exc:
        raise InfrastructureError(f"cannot reach AWS for {action}: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise InfrastructureError(f"{action} failed: {exc}") from None


def _subject(params: dict[str, Any]) -> str:
    """Name the resource a call was about, for error messages."""
    if params.get("service"):
        return f"ECS service '{params['service']}' in cluster '{params.get('cluster', 'default')}'"
    if params.get("cluster"):
        return f"ECS cluster '{params['cluster']}'"
    for key in ("ResourceId", "TargetGroupArn", "taskDefinition", "QueueName"):
        if params.get(key):
            return f"'{params[key]}'"
    return "the request"


def iam_prefix(service_name: str) -> str:
    """The IAM action prefix of a botocore service name or hyphenated service id."""
    return _IAM_PREFIXES.get(service_name, service_name)


_IAM_PREFIXES = {
    "elbv2": "elasticloadbalancing",
    "elastic-load-balancing-v2": "elasticloadbalancing",
    "application-auto-scaling": "application-autoscaling",
}


def _pascal(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))
