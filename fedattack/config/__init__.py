"""Experiment and campaign configuration: the one place for defaults and validation.

A YAML file is parsed into :class:`Experiment` (one run) or :class:`Campaign` (a list of
experiments plus sweeps). Every field has a default that reproduces the paper's set-up where the
paper gives one; unknown keys are refused so that a typo never silently falls back to a default.

One module a concern: ``base`` (strict models, bounded counts, names), ``data`` and ``model``
(the dataset and the target model), ``code`` (references to the user's code and files,
``python_path``), ``federation`` (participants, strategy, SecAgg+, client DP), ``attack`` (the
offline attack and the federated attacker), ``gan`` (Hitaj et al.'s attacker and DP-SGD),
``experiment`` (the Experiment and its cross-field rules), ``loading`` (YAML and its one-line
messages) and ``campaign``. Parsing a YAML imports neither torch nor Flower (an experiment that
names attack plug-ins imports those).
"""

from fedattack.config.attack import (
    ASCENT_FRACTION,
    FEDERATED_MODES,
    AttackConfig,
    AttackerConfig,
    AttackName,
    FeatureConfig,
    LayerRef,
    ReferenceConfig,
    attack_names,
)
from fedattack.config.base import (
    MAX_COUNT,
    MAX_STEPS,
    NAME_MAX,
    NAME_PATTERN,
    Accuracy,
    ConfigError,
    NonNegInt,
    PositiveInt,
    SafeName,
    Steps,
    Strict,
    Unit,
)
from fedattack.config.campaign import (
    Campaign,
    CampaignEntry,
    is_campaign,
    is_experiment_key,
    parse_campaign,
)
from fedattack.config.data import DataConfig, DatasetSource, KnowledgeSizes
from fedattack.config.experiment import Experiment
from fedattack.config.federation import (
    CLIENT_DP_CLIPPING,
    STRATEGY_PARAMETERS,
    ClientDPConfig,
    FederationConfig,
    SecAggConfig,
    StrategyConfig,
)
from fedattack.config.gan import GanConfig, PrivacyConfig
from fedattack.config.inversion import InversionConfig
from fedattack.config.loading import (
    DuplicateKey,
    experiment_yaml,
    format_validation_error,
    load_experiment,
    load_yaml,
    parse_experiment,
)
from fedattack.config.model import ModelConfig, TrainConfig

__all__ = [
    "ASCENT_FRACTION", "CLIENT_DP_CLIPPING", "FEDERATED_MODES", "MAX_COUNT", "MAX_STEPS",
    "NAME_MAX", "NAME_PATTERN", "STRATEGY_PARAMETERS", "Accuracy", "AttackConfig",
    "AttackName", "AttackerConfig", "Campaign", "CampaignEntry", "ClientDPConfig", "ConfigError",
    "DataConfig", "DatasetSource", "DuplicateKey", "Experiment", "FeatureConfig",
    "FederationConfig", "GanConfig", "InversionConfig",
    "KnowledgeSizes", "LayerRef", "ModelConfig", "NonNegInt", "PositiveInt", "PrivacyConfig",
    "ReferenceConfig", "SafeName", "SecAggConfig", "Steps", "Strict", "StrategyConfig",
    "TrainConfig", "Unit", "attack_names", "experiment_yaml", "format_validation_error",
    "is_campaign", "is_experiment_key", "load_experiment", "load_yaml", "parse_campaign",
    "parse_experiment",
]
