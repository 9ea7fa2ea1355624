"""The contract every side shares, numpy only: exit rules (:mod:`contract.rules`), the one configuration type
of an ``exitconfig/1`` entry (:mod:`contract.config`) and cost models (:mod:`contract.costs`).

The search (``search/``), the torch runtime (``exits/``) and the deployed router (``bundle/``) import it; it
imports none of them, nor torch, optuna, pymoo, matplotlib or ``data_cache`` (``docs/architecture.md``), so every
side (and a deployment target) can import it.
"""

from .config import ExitConfig, ExitRef, ExitTable, entries_problems
from .errors import ContractError
from .rules import (
    ExitRule,
    RuleInputs,
    exit_partners,
    float32_cut,
    get_rule,
    harmless,
    list_rules,
    partner_exit,
    reads_partner,
    register_rule,
    rule_class,
    rule_inputs_from_logits,
    rule_inputs_from_topk,
    topk_of_logits,
)

__all__ = [
    "ContractError",
    "ExitRule",
    "RuleInputs",
    "float32_cut",
    "register_rule",
    "get_rule",
    "rule_class",
    "list_rules",
    "rule_inputs_from_logits",
    "rule_inputs_from_topk",
    "topk_of_logits",
    "partner_exit",
    "exit_partners",
    "reads_partner",
    "harmless",
    "ExitConfig",
    "ExitRef",
    "ExitTable",
    "entries_problems",
]
