"""A search's figures, Optuna's own: its trials' held-out accuracy as they came (the best so far
drawn beside), and how much of it each searched setting explains (fANOVA's importance)."""
import warnings

import matplotlib.pyplot as plt
from optuna.visualization import matplotlib as optuna_figures

from cifar10_fast.core.errors import warn
from cifar10_fast.core.files import save_figure
from cifar10_fast.core.run_folder import SEARCH_HISTORY_PNG, SEARCH_IMPORTANCE_PNG


def write_search_figures(study, group_dir):
    """Both figures into the group folder; one that the trials cannot make (a single finished
    trial has no importance to speak of) is left out with a warning."""
    figures = {SEARCH_HISTORY_PNG: optuna_figures.plot_optimization_history,
               SEARCH_IMPORTANCE_PNG: optuna_figures.plot_param_importances}
    for name, plot in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "is experimental": Optuna's word on its matplotlib figures
                axes = plot(study)
        except (ValueError, RuntimeError) as e:
            warn(f"no {name} for this search ({' '.join(str(e).split())})")
            continue
        axes.set_ylabel(axes.get_ylabel().replace("Objective Value", "held-out accuracy"))
        save_figure(axes.figure, group_dir / name)
        plt.close(axes.figure)
