"""How every component of this project is made: the project's pipeline image (which already has
kfp and the library installed), so kfp.local's SubprocessRunner and a cluster run the same code."""

from collections.abc import Callable
from typing import Any

from kfp import dsl


def component_builder(image: str) -> Callable[[Callable[..., Any]], Any]:
    def component(func: Callable[..., Any]) -> Any:
        return dsl.component(func=func, base_image=image, install_kfp_package=False)

    return component
