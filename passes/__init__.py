"""FX passes that find softmax(QK^T)V attention in a Dynamo graph and rewrite it to torch.ops.sus.attention.

    from passes import rewrite_attention
    result = rewrite_attention(gm, choose_c)   # choose_c(module_path) -> (c, rule label or None)
    result.sites, result.skipped

See passes/rewrite.py for the driver and one module per family of forms.
"""
import sus_fx.ops  # noqa: F401  (registers torch.ops.sus.attention)

from .matcher import NoMatch
from .rewrite import RewriteResult, Site, Skip, rewrite_attention

__all__ = ["rewrite_attention", "RewriteResult", "Site", "Skip", "NoMatch"]
