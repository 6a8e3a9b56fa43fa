"""Type hints of the native module (the Rust binding); the public API is in
``lrp_heatmap`` (``__init__.py``)."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

BUNDLED_NAME: str
DEFAULT_RULES: List[str]

class Error(Exception): ...
class ModelError(Error): ...
class ImageError(Error): ...

class NativeModel:
    def __init__(self, model: str, input_size: Optional[Tuple[int, int]] = None) -> None: ...
    @property
    def labels(self) -> List[str]: ...
    @property
    def input_shape(self) -> List[int]: ...
    @staticmethod
    def rules() -> List[str]: ...
    @staticmethod
    def signed(rule: str) -> bool: ...
    def find_class(self, target: str) -> int: ...
    def explain(
        self,
        inputs: List[Tuple[str, Any]],
        rule: str,
        target: Optional[int],
        params: Dict[str, Any],
        layers: List[str],
        concept: Optional[Tuple[str, List[int]]],
        tolerant: bool = False,
    ) -> List[Any]: ...
    def evaluate(
        self,
        inputs: List[Tuple[str, Any]],
        names: List[str],
        rules: List[str],
        target: Optional[int],
        params: Dict[str, Any],
        model_name: str,
        perturb: str,
        patch: int,
        steps: int,
        seed: int,
        randomize: bool,
        batch: int,
    ) -> str: ...

def heatmap(
    relevance: npt.NDArray[np.float32],
    width: int,
    height: int,
    signed: bool,
    cmap: Optional[str] = None,
    clip: float = 99.5,
    photo: Optional[npt.NDArray[np.uint8]] = None,
) -> npt.NDArray[np.uint8]: ...
def png(
    relevance: npt.NDArray[np.float32],
    width: int,
    height: int,
    signed: bool,
    cmap: Optional[str] = None,
    clip: float = 99.5,
    photo: Optional[npt.NDArray[np.uint8]] = None,
) -> bytes: ...
