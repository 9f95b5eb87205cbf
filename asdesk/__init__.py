"""asdesk: an offline diagnostic workstation for ankylosing spondylitis and related spine and joint
disease on MRI and X-ray.

Research use only; not a medical device.
"""

import os as _os

# ONNX Runtime owns the CPU cores while models run. numpy's OpenBLAS would start its own threads for the content
# gate's small matrix products; their busy-waiting slowed screening from 137 to 84 images/s on 2 cores
# (benchmarks/README.md). Set before numpy is first imported (the asdesk command imports this package first);
# an explicit OPENBLAS_NUM_THREADS in the environment wins.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
INTENDED_USE = (
    "Research use only; not a medical device. Findings are decision support for a qualified reader "
    "and must not be used as the sole basis of a diagnosis."
)
