"""``cervixfm retrieval-eval``: cell-image retrieval of the test split against the training split (published metrics)."""

from __future__ import annotations


def register(sub) -> None:
    from training.cli_args import add_retrieval_arguments

    p = sub.add_parser(
        "retrieval-eval", help="retrieval evaluation: top-1/3/5/10 and majority vote MV@5/10",
        description="Keys = training-split features, queries = test-split features (cached like the linear probe). "
                    "Both are centred on the key mean and L2-normalised; an exact L2 search returns 10 neighbours "
                    "per query. Reports top-k hit rates and majority-vote accuracies.",
    )
    add_retrieval_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.retrieval_eval import handle

    return handle(args)
