"""``cu export``: a state as a diffusers folder, an original-layout single file or a LoRA.

One module per format (``diffusers_folder.py``, ``single_file.py``, ``lora.py``); ``common.py``
opens the state against its base and builds the ModelSpec/``cu.*`` metadata; ``run.py`` is the
request → result API the CLI calls.
"""
