"""A site checked against its model: what ``config check``, ``run`` and ``doctor`` must agree on.

Everything about the model that can be known before audio flows: the directory follows the
contract, per-label rules name real labels, query names do not clash with labels, and the model
has the text heads that captions and queries need. One line per problem; empty when the site fits.
"""

from __future__ import annotations

from rtaudio.config.site import SiteConfig
from rtaudio.contract import ContractError, load_model_dir, missing_files
from rtaudio.contract.files import CAPTION_FILES, QUERY_FILES


def model_problems(config: SiteConfig) -> list[str]:
    """Every way the site does not fit its model (``model.json`` read, hash checked)."""
    try:
        labels = load_model_dir(config.model).info.labels
    except ContractError as exc:
        return [f"model: {exc}"]
    problems = [f"events.labels.{name}: not a label of the model; expected one of {', '.join(labels)}" for name in config.events.labels if name not in labels]
    problems += [f"queries.{name}: the name is a label of the model; events would clash, pick another name" for name in config.queries if name in labels]
    return problems + text_head_problems(config)


def text_head_problems(config: SiteConfig) -> list[str]:
    """Why the model cannot serve the configured captions/queries (missing text-head files); empty when it can."""
    problems = []
    if config.captions is not None and (missing := missing_files(config.model, CAPTION_FILES)):
        problems.append(f"captions: model {config.model} has no caption decoder ({', '.join(missing)} missing); retrain with captions: in train.yaml")
    if config.active_queries() and (missing := missing_files(config.model, QUERY_FILES)):
        problems.append(f"queries: model {config.model} has no audio-text space ({', '.join(missing)} missing); retrain with captions: in train.yaml")
    return problems
