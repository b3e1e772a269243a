"""Load a user's model file.

The file defines ``build_model()`` returning an ``nn.Module`` (or a module-level ``model``) and,
optionally, ``make_batch(batch_size, seq_len, device)``, ``loss_fn(model, batch)`` and
``LORA_TARGETS``. Every way the file can be wrong becomes a ``WorkloadError`` whose one-line
message names the file and the problem.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

from torch import nn

from .errors import WorkloadError


@dataclass
class UserModel:
    """What a model file provided."""

    path: Path
    model: nn.Module
    make_batch: Optional[Callable[..., Any]]
    loss_fn: Optional[Callable[[nn.Module, Any], Any]]
    lora_targets: Optional[list[str]]


def _where(path: Path, exc: BaseException) -> str:
    """'file:line' of the innermost frame of exc that lies in the user's file, else 'file'."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def _import(path: Path) -> ModuleType:
    name = f"lora_profiler_user_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise WorkloadError(f"{path}: not a Python file (expected a .py model file)")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # the file's own neighbours import as they would for it
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise WorkloadError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except ModuleNotFoundError as exc:
        raise WorkloadError(
            f"{_where(path, exc)}: cannot import {exc.name!r} ({exc}); install it or fix the import"
        ) from exc
    except ImportError as exc:
        raise WorkloadError(f"{_where(path, exc)}: import failed: {exc}") from exc
    except Exception as exc:
        raise WorkloadError(
            f"{_where(path, exc)}: failed while importing: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if sys.path and sys.path[0] == str(path.parent):
            sys.path.pop(0)
    return module


def _optional_callable(module: ModuleType, path: Path, name: str) -> Optional[Callable]:
    value = getattr(module, name, None)
    if value is not None and not callable(value):
        raise WorkloadError(f"{path}: {name} must be a function, got {type(value).__name__}")
    return value


def load_model_file(path: str | Path) -> UserModel:
    """Import a model file and build its model.

    Args:
        path: the ``.py`` file.

    Returns:
        The built model and the optional hooks the file defines.

    Raises:
        WorkloadError: missing file, import failure (syntax error, missing package, exception at
            import), no ``build_model``/``model``, ``build_model`` raising or returning a
            non-Module, malformed ``LORA_TARGETS``.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise WorkloadError(f"{path}: model file not found")
    if path.is_dir():
        raise WorkloadError(f"{path}: is a folder; pass the model's .py file")
    module = _import(path)

    build = getattr(module, "build_model", None)
    if build is not None:
        if not callable(build):
            raise WorkloadError(f"{path}: build_model must be a function, got {type(build).__name__}")
        try:
            model = build()
        except Exception as exc:
            raise WorkloadError(
                f"{_where(path, exc)}: build_model() raised {type(exc).__name__}: {exc}"
            ) from exc
        what = "build_model() returned"
    elif hasattr(module, "model"):
        model = module.model
        what = "`model` is"
    else:
        raise WorkloadError(
            f"{path}: defines neither build_model() nor a module-level `model`; add "
            "`def build_model(): return MyModel()`"
        )
    if not isinstance(model, nn.Module):
        raise WorkloadError(
            f"{path}: {what} a {type(model).__name__}, expected a torch.nn.Module"
        )

    targets = getattr(module, "LORA_TARGETS", None)
    if targets is not None:
        if isinstance(targets, str):
            targets = [targets]
        if not (isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) for t in targets)):
            raise WorkloadError(f"{path}: LORA_TARGETS must be a non-empty list of module-name patterns")
        targets = list(targets)
    return UserModel(
        path=path,
        model=model,
        make_batch=_optional_callable(module, path, "make_batch"),
        loss_fn=_optional_callable(module, path, "loss_fn"),
        lora_targets=targets,
    )
