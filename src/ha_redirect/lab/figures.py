"""The evaluation's figures (the paper's Figs. 2-4 and the service gap).

PNGs drawn with matplotlib's Agg backend from `report.aggregate`'s
{scheme: {rate: {metric: Spread}}}: each line a scheme, its points the
median over repetitions with the range as error bars.
"""

import os


def _plot(ax, agg, schemes, key, scale=1.0, style='-o', label_suffix='',
          colors=None):
    for i, scheme in enumerate(schemes):
        rates, med, lo, hi = [], [], [], []
        for rate, m in agg.get(scheme, {}).items():
            s = m.get(key)
            if s is None or s.median is None:
                continue
            rates.append(rate)
            med.append(s.median * scale)
            lo.append((s.median - s.low) * scale)
            hi.append((s.high - s.median) * scale)
        if not rates:
            continue
        color = (colors or {}).get(scheme, f'C{i}')
        ax.errorbar(rates, med, yerr=[lo, hi], fmt=style, capsize=3,
                    color=color, label=scheme + label_suffix)


def write_figures(out_dir, agg, schemes):
    """fig2..fig5 PNGs; returns their file names."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    colors = {s: f'C{i}' for i, s in enumerate(schemes)}
    names = []

    def finish(fig, axes, name, title):
        for ax in axes:
            ax.set_xlabel('client arrival rate (clients/s)')
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize='small')
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        names.append(name)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _plot(ax, agg, schemes, 'backup_response_s', colors=colors)
    ax.set_yscale('log')
    ax.set_ylabel('backup response time (s)')
    finish(fig, [ax], 'fig2_backup_response.png',
           "Fig. 2: backup's response time (median, range)")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    for ax, key, label in zip(
            axes, ('rst_after', 'aborted_before', 'aborted_after'),
            ('TCP RSTs caused by the failover',
             'aborted clients, established before',
             'aborted clients, attempted after')):
        _plot(ax, agg, schemes, key, colors=colors)
        ax.set_ylabel(label)
    finish(fig, axes, 'fig3_rsts_aborts.png',
           'Fig. 3: TCP RSTs and aborted connections due to the failover')

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _plot(ax, agg, schemes, 'throughput_mbps', colors=colors,
          label_suffix=' (failure)')
    _plot(ax, agg, schemes, 'baseline_throughput_mbps', style='--s',
          colors=colors, label_suffix=' (no failure)')
    ax.set_ylabel('average throughput per client (Mbit/s)')
    finish(fig, [ax], 'fig4_throughput.png',
           'Fig. 4: average throughput achieved')

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    _plot(axes[0], agg, schemes, 'service_gap_s', colors=colors)
    axes[0].set_yscale('log')
    axes[0].set_ylabel('service gap (s)')
    _plot(axes[1], agg, schemes, 'probe_failed_after', colors=colors)
    axes[1].set_ylabel('failed probe connections')
    finish(fig, axes, 'fig5_service_gap.png',
           'Service gap seen by a new connection every few ms')
    return names
