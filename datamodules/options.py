"""The options every datamodule accepts (the keys of ``conf/data/*.yaml``), and the checks of their values."""

import dataclasses

from input_conventions import FAMILIES

# The smallest value of each numeric option (None, where allowed, is always accepted).
MINIMUMS = {
    "num_classes": 1,
    "in_chans": 1,
    "image_size": 1,
    "batch_size": 1,
    "eval_batch_size": 1,
    "num_workers": 0,
    "max_train_samples": 1,
    "max_eval_samples": 1,
}


@dataclasses.dataclass(kw_only=True)
class DataOptions:
    """The options every datamodule accepts, i.e. the keys of ``conf/data/*.yaml``.

    A datamodule's ``Options`` subclasses this (or its parent's ``Options``) to add its own options and to give
    shared ones a default; ``ImageDataModule.__init__`` accepts exactly these fields as keyword arguments.
    """

    root: str
    num_classes: int | None  # None: taken from the data in setup
    in_chans: int
    image_size: int
    model_family: str
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int | None = None
    pin_memory: bool | None = None
    persistent_workers: bool = True
    val_fraction: float = 0.1
    split_seed: int = 0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    label_noise: float = 0.0
    label_noise_seed: int = 0
    gpu_resident: bool = False  # only where the subclass implements device_transform
    random_erasing: float = 0.0  # probability of erasing a random box of a training image (after its transform)

    def __post_init__(self) -> None:
        """Refuse values no datamodule can use; a subclass with checks of its own calls this first."""
        if self.model_family not in FAMILIES:
            raise ValueError(f"model_family must be one of {FAMILIES}, got {self.model_family!r}")
        for name, minimum in MINIMUMS.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ValueError(f"{name} must be >= {minimum} (or null where allowed), got {value}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.label_noise < 1:
            raise ValueError(
                f"label_noise must be in [0, 1) (the noise level 1 - r, docs/paper.md §5.2), got {self.label_noise}"
            )
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing is a probability in [0, 1], got {self.random_erasing}")
        if self.gpu_resident and self.random_erasing > 0:
            raise ValueError(
                "random erasing has no GPU-resident form: set data.random_erasing=0 or data.gpu_resident=false"
            )
