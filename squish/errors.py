"""Errors the engine reports. `UserError` means the caller's input was wrong (CLI exit 1);
`EngineFailure` means the system failed (CLI exit 2)."""


class SquishError(Exception):
    exit_code = 2


class UserError(SquishError):
    exit_code = 1


class ModelNotFound(UserError):
    pass


class ModelError(SquishError):
    """A model file or directory that is missing, partial or corrupt."""


class EngineFailure(SquishError):
    pass
