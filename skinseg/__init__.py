"""skinseg: a Keras/TensorFlow toolkit for skin-lesion segmentation.

One package, floors that import only downwards (checked by import-linter, see pyproject.toml):

    core            errors, atomic writes, the run folder (paths, lock, records)
    models  data_pipeline  losses  metrics      networks, data, losses, metric maths
    inference       the Segmenter: image -> preprocessing -> network -> mask at original size
    training        the training loop and its run configuration
    evaluation      scores through the Segmenter; tables and figures
    cli             every command: parsing and one call

The Python API is `skinseg.Segmenter` (imported lazily: `import skinseg` stays cheap).
"""

__version__ = "0.3.0"

__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str):
    # TensorFlow loads only when the API is used, so `--help` and the data tools start fast.
    if name == "Segmenter":
        from skinseg.inference.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'skinseg' has no attribute {name!r}")
