"""Exceptions raised by metahmr. Every message names the input at fault and how to fix it."""

from __future__ import annotations


class MetaHMRError(Exception):
    """Base class of all errors that metahmr reports to the user."""


class AssetNotFoundError(MetaHMRError, FileNotFoundError):
    """A required asset (weights, body model, regressor file) could not be found."""


class CheckpointError(MetaHMRError):
    """A checkpoint is damaged, of an unknown layout, or does not match the network."""


class BodyModelError(MetaHMRError):
    """A body model file is damaged, of the wrong kind, or unsafe to load."""


class InputError(MetaHMRError):
    """An input image, video or annotation file cannot be used."""


class ConfigError(MetaHMRError, ValueError):
    """A configuration value or file is invalid."""


class DatasetError(MetaHMRError):
    """A dataset file is missing keys, has wrong shapes or references missing images."""
