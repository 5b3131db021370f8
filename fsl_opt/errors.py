"""Exceptions raised by fsl-opt."""


class ConfigError(ValueError):
    """Bad input: the message names the field, the device and the value expected."""
