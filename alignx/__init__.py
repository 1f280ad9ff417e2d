"""AlignX: multilingual alignment of decoder LLMs (stage-1 contrastive + language matching, stage-2 SFT).

The library never imports Prefect; orchestration lives in ``tasks/`` and ``flows/``.
"""

__version__ = "0.1.0"
