"""Save a loaded base with a state applied as a diffusers folder (``save_pretrained``).

Used by ``cu export diffusers`` when the base is a single file (a folder base is copied and only
its changed component files are rewritten, without loading any model).
"""

from __future__ import annotations

from cu_cli._util.errors import CuError


def save_pretrained_with_state(base, tensors: dict, out_dir: str) -> None:
    """Load ``base`` offline (``from_single_file`` with its config folder), apply ``tensors``
    strictly (models/apply.py) and ``save_pretrained`` every component to ``out_dir``."""
    import diffusers

    from cu_cli.models.apply import apply_state
    from cu_cli.models.base import quiet_libraries
    from cu_cli.models.families import get_family

    quiet_libraries()
    fam = get_family(base.family)
    cls = getattr(diffusers, fam.pipeline_class)
    kwargs = fam.load_kwargs()
    try:
        pipe = cls.from_single_file(base.single_file, config=base.path, local_files_only=True,
                                    **kwargs)
    except (OSError, ValueError) as e:
        raise CuError(f"cannot load base {base.id}: {str(e).splitlines()[0]}")
    apply_state(pipe, tensors, source="state")
    pipe.save_pretrained(out_dir, safe_serialization=True)
