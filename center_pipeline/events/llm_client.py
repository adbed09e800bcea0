"""Chat-completions client that asks an LLM for events and retries transient failures.

It speaks to OpenAI, to xAI Grok through its OpenAI-compatible API, or to any
OpenAI-compatible server given by base URL, always through the official `openai` SDK.
`OpenAiApiClient` contains the retries and error mapping that the Responses API client in
`grounded.py` shares.
"""

import email.utils
import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Self, TypeVar

import openai

from center_pipeline.events.parsing import AnswerParseError, ParsedEvents, parse_events_answer
from center_pipeline.events.pricing import CallUsage

logger = logging.getLogger(__name__)

API_KEY_ENV_VAR = "LLM_API_KEY"

ResponseT = TypeVar("ResponseT")

# Maximum length of server error text and refusal text quoted in exception messages.
_MAX_QUOTED_CHARS = 300
_MAX_REFUSAL_CHARS = 200

# Shortest piece of the API key removed from quoted server text, since a server may echo
# part of the key.
_MIN_KEY_FRAGMENT = 8

# Statuses retried with backoff besides 5xx. The openai SDK 3.60 retries 408 and 409 too.
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
# Phrases in error text that mean the account is out of credit. Retrying does not help.
_QUOTA_PHRASES = (
    "insufficient_quota",
    "exceeded your current quota",
    "credits",
    "spending limit",
)
# Phrases in a 400 error that mean the prompt plus output do not fit the model's context.
_TOO_LARGE_PHRASES = (
    "context_length",
    "context length",
    "maximum context",
    "too many tokens",
    "too large",
    "too long",
)


class LlmError(Exception):
    """Raised when the LLM request fails. Base class of every error of this module.

    Attributes:
        status_code: HTTP status of the last response, or None when there was none.
        usage: Tokens and tool calls of an answer that arrived but could not be used, or
            None when no answer arrived.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, usage: CallUsage | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.usage = usage


class LlmAuthError(LlmError):
    """Raised on HTTP 401, 403 or a 400 about the API key: the key is invalid or lacks access."""


class LlmQuotaError(LlmError):
    """Raised when the account has no quota or credit left (`insufficient_quota`)."""


class LlmRequestError(LlmError):
    """Raised when the server rejects the request itself, e.g. as too large for the context."""


class LlmRateLimitError(LlmError):
    """Raised when HTTP 429 persists or the server requests a longer wait than allowed."""


class LlmAnswerError(LlmError):
    """Raised when the answer is a refusal, truncated, empty or contains no events list."""


@dataclass(frozen=True)
class LlmAnswer:
    """The first choice of a chat completion, with token usage and the HTTP requests made."""

    content: str | None
    finish_reason: str | None
    refusal: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    attempts: int

    @property
    def usage(self) -> CallUsage:
        """Prompt and completion tokens as a `CallUsage`. Chat completions use no tools."""
        return CallUsage(input_tokens=self.prompt_tokens, output_tokens=self.completion_tokens)


@dataclass(frozen=True)
class ErrorDetails:
    """Error fields read from OpenAI's `{"error": {...}}` or xAI's flat `{"code", "error"}`."""

    message: str
    type: str | None
    code: str | None

    def describe(self, status_code: int) -> str:
        label = f"HTTP {status_code}" + (f" {self.code}" if self.code else "")
        return f"{label}: {self.message}" if self.message else label

    def mentions(self, *phrases: str) -> bool:
        text = " ".join(part for part in (self.message, self.type, self.code) if part).casefold()
        return any(phrase in text for phrase in phrases)


class OpenAiApiClient:
    """Shared part of the LLM clients: the SDK client, retries and error mapping.

    The SDK's own retries are off (`max_retries=0`), so the retries of this class are the
    only ones. When `base_url` is None the SDK uses OPENAI_BASE_URL or else OpenAI's API.
    Safe to share between threads.
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout_seconds: float = 60.0,
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        max_retry_after_seconds: float = 60.0,
        max_output_tokens: int = 4096,
    ) -> None:
        """Create the SDK client.

        Args:
            api_key: Key sent as the bearer token. It never appears in logs or errors.
            model: Model name, e.g. "gpt-4o-mini" or "grok-3-mini".
            base_url: Base URL of an OpenAI-compatible API, e.g. "https://host/v1".
            timeout_seconds: Timeout of each HTTP request, in seconds.
            max_attempts: Maximum requests for one prompt when failures are transient.
                A chat request resent without an option the server rejected is not
                counted.
            backoff_seconds: Wait before the first retry, doubled for each later one.
            max_backoff_seconds: Maximum wait between retries without a Retry-After header.
            max_retry_after_seconds: Longest Retry-After wait honoured. A longer one fails
                the prompt at once.
            max_output_tokens: Maximum output tokens requested.

        Raises:
            LlmAuthError: The API key is empty.
            ValueError: A numeric setting is out of range.
        """
        if not api_key or not api_key.strip():
            raise LlmAuthError(f"LLM API key is empty. Set it in {API_KEY_ENV_VAR}.")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if min(timeout_seconds, backoff_seconds, max_backoff_seconds) < 0:
            raise ValueError("timeout_seconds and backoff settings must not be negative")
        if max_output_tokens < 1:
            raise ValueError(f"max_output_tokens must be at least 1, got {max_output_tokens}")

        self._api_key = api_key
        self._model = model
        self._timeout_seconds = timeout_seconds
        self._max_attempts = max_attempts
        self._backoff_seconds = backoff_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._max_retry_after_seconds = max_retry_after_seconds
        self._max_output_tokens = max_output_tokens
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=0
        )

    @property
    def model(self) -> str:
        """Model name sent with every request."""
        return self._model

    def close(self) -> None:
        """Close the HTTP connections of the SDK client."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send_with_retries(
        self,
        send: Callable[[], ResponseT],
        resend_at_once: Callable[[int, ErrorDetails], bool] | None = None,
    ) -> tuple[ResponseT, int]:
        """Call `send` until it succeeds or fails for good, and return its result and attempts.

        429, 408, 409 and 5xx responses, timeouts and connection errors are retried with
        exponential backoff and jitter, or after the server's Retry-After time. When
        `resend_at_once` returns True for an error status, `send` runs again at once and the
        failure is not counted.

        Raises:
            LlmAuthError: HTTP 401 or 403, or HTTP 400 about the API key.
            LlmQuotaError: The account's quota or credit is exhausted.
            LlmRequestError: HTTP 400, 404, 413 or 422, e.g. a prompt too large for the
                context.
            LlmRateLimitError: HTTP 429 on every attempt, or a Retry-After above
                max_retry_after_seconds.
            LlmError: Any other failure, including transient ones on every attempt.
        """
        attempts = 0
        failures = 0
        while True:
            attempts += 1
            try:
                response = send()
            except openai.APIStatusError as exc:
                details = _read_error_details(exc.response)
                if resend_at_once is not None and resend_at_once(exc.status_code, details):
                    continue
                failures += 1
                wait = self._wait_or_raise(
                    exc.status_code, details, exc.response.headers, failures
                )
                reason = self._redact(details.describe(exc.status_code))
                status_code: int | None = exc.status_code
            except openai.APITimeoutError:
                failures += 1
                wait = self._backoff(failures)
                reason = f"request timed out after {self._timeout_seconds:g} s"
                status_code = None
            except openai.APIConnectionError as exc:
                failures += 1
                wait = self._backoff(failures)
                cause = f" ({exc.__cause__})" if exc.__cause__ else ""
                reason = f"connection failed: {self._redact(str(exc) + cause)}"
                status_code = None
            except openai.OpenAIError as exc:
                raise LlmError(
                    f"LLM request failed: {type(exc).__name__}: {self._redact(str(exc))}"
                ) from None
            except ValueError as exc:
                # The SDK raises json.JSONDecodeError for a 200 response whose body is not JSON,
                # such as an HTML page from a proxy.
                raise LlmError(
                    f"LLM API returned a response that is not valid JSON: {self._redact(str(exc))}"
                ) from None
            else:
                return response, attempts

            if failures >= self._max_attempts:
                message = f"LLM request failed after {attempts} attempts. Last error: {reason}"
                if status_code == 429:
                    raise LlmRateLimitError(message, status_code=status_code)
                raise LlmError(message, status_code=status_code)
            logger.warning(
                "LLM request to model %s failed (%s). Retrying in %.2f s, attempt %d of %d.",
                self._model,
                reason,
                wait,
                failures + 1,
                self._max_attempts,
            )
            time.sleep(wait)

    def _raise_for_endpoint(self, status_code: int, details: ErrorDetails) -> None:
        """Raise an error that names this endpoint's likely cause, or return to go on.

        Called for a status that is not about the key or the quota, before the generic
        mapping of 400, 404 and 422.
        """

    def _wait_or_raise(
        self, status_code: int, details: ErrorDetails, headers: Mapping[str, str], failures: int
    ) -> float:
        """Return the wait before retrying this error, or raise if it is not retryable."""
        described = self._redact(details.describe(status_code))
        if status_code in (402, 403, 429) and details.mentions(*_QUOTA_PHRASES):
            raise LlmQuotaError(
                f"LLM API quota is exhausted ({described}). Add credit or raise the spending "
                f"limit of the account whose key is in {API_KEY_ENV_VAR}. Retrying will not "
                "help.",
                status_code=status_code,
            )
        # xAI and Gemini reject an invalid key with HTTP 400 and a message about the API key.
        if status_code == 401 or (status_code == 400 and details.mentions("api key", "api_key")):
            raise LlmAuthError(
                f"LLM API rejected the API key ({described}). Set a valid key in the "
                f"{API_KEY_ENV_VAR} environment variable.",
                status_code=status_code,
            )
        if status_code == 403:
            raise LlmAuthError(
                f"LLM API rejected the API key for model {self._model!r} ({described}). Check "
                f"that the key in the {API_KEY_ENV_VAR} environment variable is valid and may "
                "use this model.",
                status_code=status_code,
            )
        if status_code == 413 or (status_code == 400 and details.mentions(*_TOO_LARGE_PHRASES)):
            raise LlmRequestError(
                f"LLM API rejected the request as too large ({described}). Shorten the prompt "
                "or lower max_output_tokens.",
                status_code=status_code,
            )
        self._raise_for_endpoint(status_code, details)
        if status_code in (400, 404, 422):
            raise LlmRequestError(
                f"LLM API rejected the request for model {self._model!r} ({described}). Check "
                "the model name and the base URL.",
                status_code=status_code,
            )
        if status_code not in _RETRYABLE_STATUSES and status_code < 500:
            raise LlmError(f"LLM request failed ({described}).", status_code=status_code)

        retry_after = _retry_after_seconds(headers)
        if retry_after is None:
            return self._backoff(failures)
        if retry_after > self._max_retry_after_seconds:
            error_class = LlmRateLimitError if status_code == 429 else LlmError
            raise error_class(
                f"LLM API asked to retry after {retry_after:g} s ({described}), which is more "
                f"than the maximum wait of {self._max_retry_after_seconds:g} s. Failing now "
                "instead of waiting.",
                status_code=status_code,
            )
        return retry_after

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with equal jitter: half the delay fixed, half random."""
        delay = min(self._max_backoff_seconds, self._backoff_seconds * 2 ** (failures - 1))
        return delay / 2 + random.uniform(0, delay / 2)

    def _redact(self, text: str) -> str:
        """Remove the API key and any 8-character piece of it from text, then cap the length."""
        redacted = text.replace(self._api_key, "[redacted]")
        for start in range(len(self._api_key) - _MIN_KEY_FRAGMENT + 1):
            fragment = self._api_key[start : start + _MIN_KEY_FRAGMENT]
            if fragment in redacted:
                redacted = redacted.replace(fragment, "[redacted]")
        return redacted[:_MAX_QUOTED_CHARS]


class EventsLlmClient(OpenAiApiClient):
    """Client for one model on one chat-completions API. Safe to share between threads."""

    def __init__(self, **settings: Any) -> None:
        """Create the SDK client. The arguments are those of `OpenAiApiClient`."""
        super().__init__(**settings)

        # Options that some OpenAI-compatible servers reject. Once rejected, they stay off
        # for this client. The lock guards these two settings.
        self._options_lock = threading.Lock()
        self._send_response_format = True
        self._token_limit_option = "max_completion_tokens"

    def complete(self, prompt: str, system_prompt: str) -> LlmAnswer:
        """Send one chat completion request for a JSON object, retrying transient failures.

        Raises:
            LlmError: As `OpenAiApiClient._send_with_retries` describes.
        """
        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": prompt},
        ]
        sent_options: dict[str, Any] = {}

        def send() -> Any:
            sent_options.clear()
            sent_options.update(self._request_options())
            return self._client.chat.completions.create(
                model=self._model, messages=messages, **sent_options
            )

        def resend_at_once(status_code: int, details: ErrorDetails) -> bool:
            return self._disable_rejected_option(status_code, details, sent_options)

        completion, attempts = self._send_with_retries(send, resend_at_once)
        return self._answer_from_completion(completion, attempts)

    def _request_options(self) -> dict[str, Any]:
        with self._options_lock:
            options: dict[str, Any] = {self._token_limit_option: self._max_output_tokens}
            if self._send_response_format:
                options["response_format"] = {"type": "json_object"}
        return options

    def _disable_rejected_option(
        self, status_code: int, details: ErrorDetails, options: Mapping[str, Any]
    ) -> bool:
        """Turn off an option that the server rejected and return whether to resend at once."""
        if status_code not in (400, 422):
            return False
        with self._options_lock:
            if "response_format" in options and details.mentions("response_format"):
                if self._send_response_format:
                    self._send_response_format = False
                    logger.warning(
                        "LLM server rejected response_format (%s). Sending requests for model "
                        "%s without it from now on.",
                        self._redact(details.describe(status_code)),
                        self._model,
                    )
                return True
            if "max_completion_tokens" in options and details.mentions("max_completion_tokens"):
                if self._token_limit_option == "max_completion_tokens":
                    self._token_limit_option = "max_tokens"
                    logger.warning(
                        "LLM server rejected max_completion_tokens (%s). Sending max_tokens "
                        "for model %s from now on.",
                        self._redact(details.describe(status_code)),
                        self._model,
                    )
                return True
        return False

    def _answer_from_completion(self, completion: Any, attempts: int) -> LlmAnswer:
        error = getattr(completion, "error", None)
        choices = getattr(completion, "choices", None)
        if error and not choices:
            raise LlmError(
                f"LLM API returned an error with HTTP 200: {self._redact(str(error))}"
            )
        if not isinstance(choices, list) or not choices:
            raise LlmError(f"LLM API response for model {self._model!r} contains no choices")

        choice = choices[0]
        message = getattr(choice, "message", None)
        content = _content_text(getattr(message, "content", None))
        refusal = getattr(message, "refusal", None)
        usage = getattr(completion, "usage", None)
        answer = LlmAnswer(
            content=content,
            finish_reason=getattr(choice, "finish_reason", None),
            refusal=refusal if isinstance(refusal, str) and refusal.strip() else None,
            model=getattr(completion, "model", None) or self._model,
            prompt_tokens=_token_count(usage, "prompt_tokens"),
            completion_tokens=_token_count(usage, "completion_tokens"),
            total_tokens=_token_count(usage, "total_tokens"),
            attempts=attempts,
        )
        logger.debug(
            "LLM answer from model %s after %d attempts: finish_reason=%s, %d total tokens",
            answer.model,
            attempts,
            answer.finish_reason,
            answer.total_tokens,
        )
        return answer

def events_from_answer(answer: LlmAnswer, run_date: date, window_days: int) -> ParsedEvents:
    """Parse the events of an answer after checking that the answer is complete.

    Raises:
        LlmAnswerError: The model refused, the answer was truncated at the token limit or
            blocked by a content filter, the content is empty, or it contains no JSON events
            list.
    """
    if answer.refusal:
        refusal = " ".join(answer.refusal.split())[:_MAX_REFUSAL_CHARS]
        raise LlmAnswerError(f"LLM model {answer.model} refused to answer: {refusal!r}")
    if answer.finish_reason == "length":
        raise LlmAnswerError(
            f"LLM answer was truncated at the output token limit after "
            f"{answer.completion_tokens} tokens. Shorten EVENT_WINDOW_DAYS or the prompt template."
        )
    if answer.finish_reason == "content_filter":
        raise LlmAnswerError(
            f"LLM answer from model {answer.model} was blocked by a content filter"
        )
    if answer.content is None or not answer.content.strip():
        raise LlmAnswerError(
            f"LLM answer from model {answer.model} has empty content "
            f"(finish_reason={answer.finish_reason})"
        )
    try:
        return parse_events_answer(answer.content, run_date, window_days)
    except AnswerParseError as exc:
        raise LlmAnswerError(f"LLM answer could not be parsed: {exc}") from exc


def _read_error_details(response: Any) -> ErrorDetails:
    try:
        text = response.text
    except Exception:  # noqa: BLE001 - a body that cannot be read leaves only the status.
        text = ""
    try:
        body = json.loads(text)
    except ValueError:
        return ErrorDetails(message=" ".join(text.split()), type=None, code=None)
    if not isinstance(body, dict):
        return ErrorDetails(message=str(body), type=None, code=None)

    error = body.get("error")
    if isinstance(error, dict):
        # OpenAI: {"error": {"message": ..., "type": ..., "code": ...}}
        source = error
        message = error.get("message")
    else:
        # xAI: {"code": ..., "error": "message"}. Others use "message" or "detail".
        source = body
        message = error if isinstance(error, str) else body.get("message") or body.get("detail")
    message_text = str(message or "")
    # xAI has sent this message percent-encoded ("Incorrect%20API%20key%20provided").
    if "%20" in message_text:
        message_text = urllib.parse.unquote(message_text)
    return ErrorDetails(
        message=" ".join(message_text.split()),
        type=_text_or_none(source.get("type")),
        code=_text_or_none(source.get("code")),
    )


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Read `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass

    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def _content_text(content: Any) -> str | None:
    """Return message content as text, joining the text parts of a list of content parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text", "") for part in content if isinstance(part, dict)]
        return "".join(part for part in parts if isinstance(part, str))
    return str(content)


def _token_count(usage: Any, field: str) -> int:
    value = getattr(usage, field, None)
    return value if isinstance(value, int) else 0


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
