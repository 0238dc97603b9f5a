"""skinseg: a Keras/TensorFlow toolkit for skin-lesion segmentation.

Installed (`pip install .`), the subpackages (`skinseg.models`, `skinseg.data_pipeline`,
`skinseg.losses`, `skinseg.metrics`, `skinseg.training`, `skinseg.evaluation`) live in this
package's folder. In a source checkout they are the top-level folders beside this one, the layout
the project keeps; adding the checkout to this package's search path lets `skinseg.models` find
`models/` there, so the scripts run from a checkout with nothing installed, and nothing generic
such as `models` is ever installed at the top level of site-packages.
"""

import os

__version__ = "0.2.0"

_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_checkout, "pyproject.toml")) and os.path.isdir(
    os.path.join(_checkout, "data_pipeline")
):
    __path__.append(_checkout)
