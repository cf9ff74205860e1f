"""`genlab augment`: the parser and command of the generated-data experiment (genlab.augment; docs/augment.md)."""

from __future__ import annotations

import argparse

from genlab.kinds.image.augment import CONDITIONS, NOISE, Experiment, Plan
from genlab.data.classic import OPS


def _list(parse, noun: str):
    def convert(text: str) -> list:
        try:
            return [parse(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {noun}") from None
    return convert


def _count(text: str) -> int:
    return 0 if text == "all" else int(text)


def add_parser(sub) -> None:
    d = Plan()
    a = sub.add_parser("augment", help="does generated data help a classifier? the measured experiment "
                                       "(docs/augment.md)")
    a.add_argument("--data", default=d.data, help="a labelled image dataset (built-in name, folder, MNIST IDX, .npz)")
    a.add_argument("--out", required=True, help="the experiment's folder (a killed experiment continues there)")
    a.add_argument("--families", type=_list(str, "names"), default=d.families,
                   help=f"conditional image generators, comma-separated, or {NOISE} (a useless control); "
                        f"default {','.join(d.families)}")
    a.add_argument("--per-class", type=_list(_count, "counts or 'all'"), default=d.per_class,
                   help="real training images per class, e.g. 10,50,200,all (default 10,50,all)")
    a.add_argument("--seeds", type=_list(int, "integers"), default=d.seeds, help="default 0,1,2")
    a.add_argument("--k", type=_list(int, "integers"), default=d.k,
                   help="synthetic images per real one, e.g. 1,3,10 (default 1,4)")
    a.add_argument("--conditions", type=_list(str, "names"), default=d.conditions,
                   help=f"which classifier trainings (default all: {', '.join(CONDITIONS)})")
    a.add_argument("--classic", type=_list(str, "names"), default=d.classic,
                   help=(f"classic augmentation ops: {', '.join(f'{k} ({v})' for k, v in OPS.items())}; "
                         f"default {','.join(d.classic)}").replace("%", "%%"))
    a.add_argument("--image-size", type=int, default=d.image_size, help="resize the images (0 = native size)")
    a.add_argument("--gen-preset", default=d.gen_preset, help=f"the generators' preset (default {d.gen_preset})")
    a.add_argument("--gen-steps", type=int, default=d.gen_steps, help=f"default {d.gen_steps}")
    a.add_argument("--set", action="append", default=[], metavar="FAMILY:KEY=VALUE", dest="gen_set",
                   help="a config override for one generator family, e.g. ddpm:model.base_channels=32 (repeatable)")
    a.add_argument("--sample-steps", type=int, default=None, help="sampling steps of the generators that take them")
    a.add_argument("--clf-preset", default=d.clf_preset, help=f"the classifier's preset (default {d.clf_preset})")
    a.add_argument("--clf-steps", type=int, default=d.clf_steps,
                   help=f"the classifier's fixed step budget in every cell (default {d.clf_steps})")
    a.add_argument("--eval-n", type=int, default=d.eval_n,
                   help="synthetic images per generator scored by the judge (0 = as many as the test set)")
    a.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0 = torch's default)")
    a.add_argument("--no-progress", action="store_true")


def cmd_augment(args) -> int:
    plan = Plan(data=args.data, families=args.families, per_class=args.per_class, seeds=args.seeds, k=args.k,
                conditions=args.conditions, classic=args.classic, image_size=args.image_size,
                gen_preset=args.gen_preset, gen_steps=args.gen_steps, gen_set=args.gen_set,
                sample_controls={} if args.sample_steps is None else {"steps": args.sample_steps},
                clf_preset=args.clf_preset, clf_steps=args.clf_steps, eval_n=args.eval_n, threads=args.threads)
    Experiment(plan, args.out, progress=not args.no_progress).run()
    print(f"wrote {args.out}/table.md, table.csv, results.json and accuracy_vs_n.png")
    return 0
