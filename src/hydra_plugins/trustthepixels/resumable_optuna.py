"""An Optuna sweeper whose search resumes: `python train.py hparams_search=optuna` started again on the same
sweep directory continues its study. Hydra loads sweepers from the `hydra_plugins` package only."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from hydra.utils import instantiate

log = logging.getLogger(__name__)

try:  # the `sweep` extra; without it this plugin defines nothing (and Hydra's plugin scan stays quiet)
    import optuna
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # pragma: no cover
    OptunaSweeper = None


def finished_value(job_dir: Path) -> float | None:
    """The optimized metric a trial's job wrote into metrics.json before the sweep was killed (after the job's last
    write but before the sweeper recorded it), or None: a trial whose run had finished is complete, not failed."""
    try:
        report = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):  # no metrics.json (the run had not finished), or half of one
        return None
    name = report.get("optimized_metric")
    value = (report.get("val") or {}).get(name, (report.get("test") or {}).get(name))
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """hydra-optuna-sweeper, with `n_trials` meaning the study's total: started again on the same sweep
        directory (the study lives in SQLite there), it runs only the trials still missing. Trials a killed
        run left RUNNING are told first (public `study.tell`), so the sampler does not wait on them: COMPLETE with
        their value when their job had written metrics.json (killed before the sweeper recorded it), else FAIL.

        Not Optuna's heartbeat (`RDBStorage(heartbeat_interval=...)`, `fail_stale_trials`) nor
        `MaxTrialsCallback`: both act inside `study.optimize`, which hydra-optuna-sweeper does not call (it
        asks and tells trials itself)."""

        def sweep(self, arguments: list[str]) -> None:
            impl = self.sweeper
            Path(str(impl.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)  # SQLite needs the folder
            if impl.storage and impl.study_name:
                try:
                    study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
                except KeyError:  # a new study
                    study = None
                if study is not None:
                    sweep_dir = Path(str(impl.config.hydra.sweep.dir))
                    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                        value = finished_value(sweep_dir / str(trial.number))  # hydra.sweep.subdir: the job number
                        if value is None:
                            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                        else:
                            study.tell(trial.number, value)
                    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
                    impl.job_idx = len(study.trials)  # new jobs get new directories
                    # A sampler seeded as before would replay its first suggestions: seed it past them.
                    sampler_cfg = impl.config.hydra.sweeper.sampler
                    if "seed" in sampler_cfg and sampler_cfg.seed is not None:
                        impl.sampler = instantiate(sampler_cfg, seed=int(sampler_cfg.seed) + len(study.trials))
                    log.info("Resuming study %s: %d of %d trials complete", impl.study_name, done, impl.n_trials)
                    impl.n_trials = max(0, impl.n_trials - done)
            if impl.n_trials:
                super().sweep(arguments)
