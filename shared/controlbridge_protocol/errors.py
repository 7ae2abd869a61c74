"""Errors shared by both sides of the wire, and the error codes a server sends."""


class ErrorCode:
    """Machine-readable codes carried by `error` messages (see PROTOCOL.md)."""

    BAD_MESSAGE = "bad_message"            # not JSON, not an object, wrong field types
    UNKNOWN_TYPE = "unknown_type"          # a message type this side does not know
    PROTOCOL_VERSION = "protocol_version"  # client and server speak different protocol versions
    NOT_READY = "not_ready"                # a message before the hello handshake
    MISSING_ATTACHMENT = "missing_attachment"
    BAD_IMAGE = "bad_image"                # an attachment that does not decode to the image it claims to be
    SIZE_MISMATCH = "size_mismatch"        # color, depth and control images disagree on size
    LIMIT_EXCEEDED = "limit_exceeded"      # sizes or counts beyond the advertised limits
    OUT_OF_RANGE = "out_of_range"          # steps, denoise, cfg, weights ... outside their range
    UNKNOWN_SAMPLER = "unknown_sampler"
    UNKNOWN_CONTROLNET = "unknown_controlnet"
    UNKNOWN_MODEL = "unknown_model"        # a model, ControlNet, LoRA, VAE or upscaler name the server does not have
    WRONG_FAMILY = "wrong_family"          # e.g. an SDXL LoRA for an SD1.5 job
    UNKNOWN_JOB = "unknown_job"
    UNAVAILABLE = "unavailable"            # a feature this server was not installed or started with
    SHUTTING_DOWN = "shutting_down"        # the server is stopping: this job will not run (or this request is refused)
    INTERNAL = "internal"                  # a bug or a device failure on the server; the job is lost, the server lives on


class ControlBridgeError(Exception):
    """Base of everything the client library raises; str(error) is one line a person can act on."""


class ProtocolError(ControlBridgeError):
    """A message that breaks the protocol. `code` is an ErrorCode value."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id: "str | None" = None   # set when the bad message named its request


class ConnectionFailed(ControlBridgeError):
    """The server could not be reached, or the connection dropped."""


class AuthenticationFailed(ControlBridgeError):
    """The server refused the token (or needs one and none was given)."""


class ProtocolMismatch(ControlBridgeError):
    """Client and server speak different protocol versions."""


class JobFailed(ControlBridgeError):
    """A job ended with an error message from the server, or was cancelled."""

    def __init__(self, code: str, message: str, job_id: "str | None" = None):
        super().__init__(message)
        self.code = code
        self.job_id = job_id
