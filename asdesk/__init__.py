"""asdesk: an offline diagnostic workstation for ankylosing spondylitis and related spine and joint
disease on MRI and X-ray.

Research use only; not a medical device.
"""

__version__ = "0.1.0"
INTENDED_USE = (
    "Research use only; not a medical device. Findings are decision support for a qualified reader "
    "and must not be used as the sole basis of a diagnosis."
)
