"""The tumor growth model of target lesions and its SAEM estimator (JAX)."""
from .fit import TGIFit, fit_tgi
from .likelihood import TGIData, lesion_loglik, observation_loglik
from .model import log_volume, params_to_phi, phi_to_params, volume
from .spec import TGIModel

__all__ = [
    "TGIData",
    "TGIFit",
    "TGIModel",
    "fit_tgi",
    "lesion_loglik",
    "log_volume",
    "observation_loglik",
    "params_to_phi",
    "phi_to_params",
    "volume",
]
