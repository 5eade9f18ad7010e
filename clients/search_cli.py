"""`paradigm search` and `paradigm leaderboard`: start a search and follow it; print a
search's leaderboard, write it as JSON, draw its Pareto plot (metric against serving
dollars per 1 000 predictions, classical and deep in two colours, the front marked)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from clients.client import ParadigmClient, enum_name, from_param_value
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import search_pb2 as search_pb

#: The batch size whose serving cost the Pareto plot is drawn against (the server's too).
PLOT_BATCH = 1
COLOURS = {"classical": "tab:blue", "deep": "tab:orange"}


def add_parsers(commands: Any) -> None:
    search = commands.add_parser(
        "search", help="search algorithms and hyperparameters (Optuna TPE), each trial a job"
    )
    search.add_argument("dataset")
    search.add_argument(
        "--algorithms",
        default="",
        help="comma-separated catalog algorithms (default: every one that fits the dataset)",
    )
    search.add_argument("--trials", type=int, default=0, help="most trials (0: no limit)")
    search.add_argument("--seconds", type=float, default=0.0, help="wall-clock budget")
    search.add_argument("--dollars", type=float, default=0.0, help="training-cost budget")
    search.add_argument("--joules", type=float, default=0.0, help="training-energy budget")
    search.add_argument("--metric", default="", help="accuracy, f1_macro, r2 or rmse")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--parallelism", type=int, default=0, help="trials at once")
    search.add_argument("--pruner", choices=("median", "none", "threshold"), default="")
    search.add_argument("--prune-threshold", type=float, default=0.0)
    search.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    search.add_argument("--no-wait", action="store_true", help="print the search id and return")
    search.add_argument(
        "--promote", metavar="ALIAS", default="", help="promote the best trial to ALIAS at the end"
    )
    search.add_argument("--gate-metric-epsilon", type=float, help="promotion gate (as alias)")
    search.add_argument("--max-p99-ms", type=float, default=0.0, help="promotion gate")
    search.add_argument("--max-joules-per-1k", type=float, default=0.0, help="promotion gate")
    search.add_argument("--require-parity", action="store_true", help="promotion gate")

    board = commands.add_parser(
        "leaderboard", help="a search's best model per algorithm, with its serving bill"
    )
    board.add_argument("search")
    board.add_argument("--json", type=Path, metavar="FILE", help="write the leaderboard here")
    board.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the Pareto plot")


def cmd_search(client: ParadigmClient, args: argparse.Namespace) -> None:
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    search = client.start_search(
        args.dataset,
        algorithms=algorithms,
        trials=args.trials,
        seconds=args.seconds,
        dollars=args.dollars,
        joules=args.joules,
        metric=args.metric,
        seed=args.seed,
        parallelism=args.parallelism,
        pruner=args.pruner,
        prune_threshold=args.prune_threshold,
        device=args.device,
        promote_alias=args.promote,
        promote_gates=_gates(args),
    )
    print(
        f"search {search.id} started on {search.dataset}: {', '.join(search.algorithms)}; "
        f"optimising {search.metric}"
    )
    if args.no_wait:
        return
    reported: set[tuple[int, int]] = set()

    def progress(now: search_pb.Search) -> None:
        for trial in now.trials:
            if trial.state != search_pb.TRIAL_STATE_RUNNING and (
                (trial.number, trial.state) not in reported
            ):
                reported.add((trial.number, trial.state))
                print(_trial_line(now, trial), flush=True)

    ended = client.wait_for_search(search.id, on_change=progress)
    state = enum_name(search_pb.SearchState, "SEARCH_STATE_", ended.state)
    best = f"; best {ended.metric} {ended.best_value:.4g}" if ended.HasField("best_value") else ""
    print(
        f"search {ended.id} {state}: {ended.stop_reason}; {ended.trials_started} trials in "
        f"{ended.seconds_spent:.1f} s, ${ended.dollars_spent:.3g}, "
        f"{ended.joules_spent:.3g} J{best}"
    )
    print(f"leaderboard: paradigm leaderboard {ended.id}")
    if args.promote:
        client.leaderboard(ended.id)  # final (winners served, promotion decided) once it returns
        print(f"promotion: {client.get_search(ended.id).promotion}")


def _gates(args: argparse.Namespace) -> pb.PromotionGates:
    gates = pb.PromotionGates(
        require_parity=args.require_parity,
        max_p99_ms=args.max_p99_ms,
        max_joules_per_1k=args.max_joules_per_1k,
    )
    if args.gate_metric_epsilon is not None:
        gates.metric_epsilon = args.gate_metric_epsilon
    return gates


def _trial_line(search: search_pb.Search, trial: search_pb.Trial) -> str:
    state = enum_name(search_pb.TrialState, "TRIAL_STATE_", trial.state)
    value = f"{search.metric} {trial.value:.4g}" if trial.HasField("value") else trial.error
    return f"  trial {trial.number:>3} {trial.algorithm:<20} {state:<9} {value}"


def cmd_leaderboard(client: ParadigmClient, args: argparse.Namespace) -> None:
    board = client.leaderboard(args.search)
    print(format_leaderboard(board))
    if args.json:
        args.json.write_text(json.dumps(leaderboard_json(board), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot_pareto(board, args.plot)
        print(f"wrote {args.plot}")


def format_leaderboard(board: search_pb.Leaderboard) -> str:
    from clients.cli import format_table

    headers = (
        "#", "algorithm", "paradigm", board.metric, "95% CI", "fit s", "train J", "train $",
        "bytes", "p50 b1 ms", "p99 b1 ms", "p50 b64 ms", "p99 b64 ms", "$/1k b1", "J/1k b1",
        "pareto",
    )  # fmt: skip
    rows = [_row(entry) for entry in board.entries]
    title = f"search {board.search_id} on {board.dataset}: best {board.metric} per algorithm"
    note = "" if board.final else "\n(the search is running: serving is measured at its end)"
    errors = [f"{e.algorithm}: {e.serving_error}" for e in board.entries if e.serving_error]
    detail = "".join(f"\nnot served: {error}" for error in errors) if board.final else ""
    return f"{title}\n{format_table(headers, rows)}{note}{detail}"


def _row(entry: search_pb.LeaderboardEntry) -> tuple[object, ...]:
    one, batch = _at(entry, 1), _at(entry, 64)
    return (
        entry.rank, entry.algorithm, _paradigm(entry), entry.value,
        f"{entry.ci_low:.3f}-{entry.ci_high:.3f}", entry.fit_seconds, entry.training_joules,
        entry.training_dollars, entry.model_bytes, one and one.p50_ms, one and one.p99_ms,
        batch and batch.p50_ms, batch and batch.p99_ms, one and one.dollars_per_1000,
        one and one.joules_per_1000, "*" if entry.pareto else "",
    )  # fmt: skip


def leaderboard_json(board: search_pb.Leaderboard) -> dict[str, Any]:
    data = MessageToDict(board, preserving_proto_field_name=True)
    for entry, message in zip(data.get("entries", []), board.entries, strict=True):
        entry["paradigm"] = _paradigm(message)
        entry["hyperparameters"] = {
            k: from_param_value(v) for k, v in message.hyperparameters.items()
        }
    return data


def plot_pareto(board: search_pb.Leaderboard, path: Path) -> None:
    """Metric (with its 95 % interval) against serving dollars per 1 000 predictions
    (batch 1, log scale); the Pareto front is joined by a line and its points ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    points = [(e, _at(e, PLOT_BATCH)) for e in board.entries]
    served = [(e, s) for e, s in points if s is not None]
    for paradigm, colour in COLOURS.items():
        mine = [(e, s) for e, s in served if _paradigm(e) == paradigm]
        axes.errorbar(
            [s.dollars_per_1000 for _, s in mine],
            [e.value for e, _ in mine],
            yerr=[
                [e.value - e.ci_low for e, _ in mine],
                [e.ci_high - e.value for e, _ in mine],
            ],
            fmt="none",
            ecolor=colour,
            alpha=0.5,
            capsize=3,
        )
        axes.scatter(
            [s.dollars_per_1000 for _, s in mine],
            [e.value for e, _ in mine],
            c=colour,
            label=paradigm,
            s=40,
            zorder=3,
        )
        for entry, figures in mine:
            axes.annotate(
                entry.algorithm, (figures.dollars_per_1000, entry.value), fontsize=8,
                xytext=(4, 4), textcoords="offset points",
            )  # fmt: skip
    front = sorted((s.dollars_per_1000, e.value) for e, s in served if e.pareto)
    if front:
        costs, values = [c for c, _ in front], [v for _, v in front]
        axes.plot(costs, values, "k--", lw=1, label="Pareto front", zorder=2)
        axes.scatter(costs, values, s=140, facecolors="none", edgecolors="k")
    if served:
        axes.set_xscale("log")
        axes.margins(x=0.2)
    axes.set_xlabel(f"serving $ per 1 000 predictions (batch {PLOT_BATCH})")
    direction = "higher" if board.maximize else "lower"
    axes.set_ylabel(f"held-out {board.metric} ({direction} is better)")
    axes.set_title(f"search {board.search_id} on {board.dataset}")
    axes.legend()
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _at(entry: search_pb.LeaderboardEntry, batch_size: int) -> search_pb.ServingFigures | None:
    return next((s for s in entry.serving if s.batch_size == batch_size), None)


def _paradigm(entry: search_pb.LeaderboardEntry) -> str:
    return enum_name(pb.Paradigm, "PARADIGM_", entry.paradigm)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: paradigm search | paradigm leaderboard")
