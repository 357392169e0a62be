"""A chapter's claims measured again on the other training seeds of the test-bed family,
and pooled into one record per claim and family.

A chapter studies seed 0 of each test-bed family: its figures, tables and prose are about
those two models. Its claims are about the recipe, though, and one training run cannot tell
a property of the recipe from an accident of that run. So the chapter is executed again,
with the same parameters, on the models trained with the other seeds (every test-bed model
parameter replaced by its replicate), and each claim's per-seed measurements are pooled by
`replication.pool` into one record, `<chapter>.family_<family>.<claim>`, judged by the claim's
own rule, with every seed's value and verdict inside it. The seed-0 record stays in the
chapter's results, marked `superseded_by` the family record; the ledger shows the family
record.

A replicate run costs as much as the chapter, so its records are cached by content: the key
hashes the chapter's code cells, the source of the library modules it runs (those its code
imports, directly or through other modules; not the book tooling),
the papers' reported values, the parameters, the replicate models' weights and the PyTorch
version. A key found in `data/replicates` (shipped; every file checked against the sha256 in
its manifest) or in the local cache is used as it is; a miss executes the chapter with the
same code and caches its records. `cgc replicates` recomputes every chapter's replicates and
ships them into `data/replicates`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .models import CARD_FILE, is_testbed, testbed_dir
from .paths import project_root
from .replication import SeedResult, fisher_z, has_interval, pool, stouffer, stratified_spearman
from .shipped import ShippedStore
from .storage import json_bytes as _json_bytes
from .subjects import slug
from .testbed import CONFIGS, TRAINED, member_status, replicate_name

MODEL_PARAMETERS = ("model", "second_model")  # chapter parameters that name a model
SINGLE_RUN_PARAMETERS = ("deep_models",)  # chapter parameters naming models trained once, without replicates
SEEDS_PARAMETER = "replicates"  # the chapter parameter listing the training seeds to pool
SEED_PARAMETER = "seed"  # the chapter parameter that seeds its data draws, SAEs and bootstraps
SEED_STRIDE = 1000  # training seed s runs with seed + 1000 s: its own, independent draws
STRATIFIED_PERMUTATIONS = 9999  # within-seed permutations of a pooled rank correlation
FOLDER = "replicates"


class ReplicateError(ValueError):
    """A replicate that cannot be used: a corrupt shipped file, records that do not match."""


def seed_zero_family(model: str) -> str | None:
    """The family whose seed-0 test bed `model` is, or None (another model)."""
    cfg = CONFIGS.get(model)
    return cfg.family if cfg is not None and model == replicate_name(cfg.family, 0) else None


def replicate_parameters(parameters: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """The chapter's parameters for training seed `seed`: every model parameter that names a
    seed-0 test bed replaced by that family's seed-`seed` replicate, any other model left out;
    the chapter's own `seed`
    moved by `SEED_STRIDE * seed`, so that the replicate draws its probes, calibration text and
    SAE initialisations afresh (pooling assumes the seeds' errors independent, and a claim
    about the recipe should not rest on one draw of the evaluation data); the seed list
    emptied (a replicate run pools nothing itself), and so is every list of models trained
    once (`SINGLE_RUN_PARAMETERS`: the deeper test beds have no replicates). None when no model parameter names a
    seed-0 test bed."""
    replaced = dict(parameters)
    found = False
    for name in MODEL_PARAMETERS:
        family = seed_zero_family(parameters.get(name) or "")
        if family is not None:
            replaced[name] = replicate_name(family, seed)  # type: ignore[arg-type]  # a FAMILIES member
            found = True
        elif name in parameters:
            replaced[name] = ""  # another model has no replicates: the run leaves it out
    if not found:
        return None
    for name in SINGLE_RUN_PARAMETERS:
        if name in parameters:
            replaced[name] = []  # one training run: nothing to replicate
    if SEED_PARAMETER in parameters:
        replaced[SEED_PARAMETER] = parameters[SEED_PARAMETER] + SEED_STRIDE * seed
    replaced[SEEDS_PARAMETER] = []
    return replaced


def _code_cells(chapter_path: Path) -> str:
    import jupytext

    notebook = jupytext.read(chapter_path)
    return "\n# --- cell ---\n".join(c.source for c in notebook.cells if c.cell_type == "code")


def _code_digest(chapter_path: Path) -> str:
    """The chapter's code cells, not its prose: editing a sentence keeps the cache."""
    return hashlib.sha256(_code_cells(chapter_path).encode()).hexdigest()


# Modules a replicate run does not use: pooling happens in the chapter's own run, after the
# replicates' records are read (a replicate run is executed with an empty seed list).
POOLING_MODULES = ("replication.py", "replicates.py")
# Modules that store and find results and compute none (a stored table reads back exactly,
# as its tests check): editing them keeps what is cached
CACHING_MODULES = ("shipped.py", "tables.py", "storage.py")


def _imported_modules(source: str, package: Path, inside: bool) -> set[str]:
    """The `cgclib` modules (file names) that `source` imports, at any depth of the code:
    `import cgclib.x`, `from cgclib import x`, `from cgclib.x import y` and, inside the
    package (`inside`), `from . import x` and `from .x import y`. Code that does not parse
    counts as importing every module, so that a key is never too small."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {p.name for p in package.glob("*.py")}
    found: set[str] = set()

    def add(dotted: str) -> None:
        head = dotted.split(".")[0]
        if head and (package / f"{head}.py").is_file():
            found.add(f"{head}.py")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cgclib."):
                    add(alias.name.removeprefix("cgclib."))
        elif isinstance(node, ast.ImportFrom):
            relative = inside and node.level == 1
            if relative or (node.level == 0 and (node.module or "").split(".")[0] == "cgclib"):
                module = (node.module or "") if relative else (node.module or "").removeprefix("cgclib").lstrip(".")
                if module:
                    add(module)
                else:
                    for alias in node.names:
                        add(alias.name)
    return found


def chapter_modules(chapter_path: Path, root: Path | None = None) -> list[str]:
    """The library modules a chapter runs: those its code cells import, and every module they
    import in turn (without `cgclib.book`, `POOLING_MODULES`, `CACHING_MODULES` and the
    package's `__init__`, which holds its table of contents and computes nothing)."""
    package = (root or project_root()) / "cgclib"
    seen: set[str] = {"__init__.py"}
    todo = _imported_modules(_code_cells(chapter_path), package, inside=False)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo |= _imported_modules((package / name).read_text(), package, inside=True) - seen
    return sorted(seen - {"__init__.py", *POOLING_MODULES, *CACHING_MODULES})


def library_digest(chapter_path: Path, root: Path | None = None) -> str:
    """The source of the library modules the chapter runs (`chapter_modules`) and the papers'
    reported values: editing a module that no code of the chapter reaches keeps its cache."""
    root = root or project_root()
    digest = hashlib.sha256()
    for name in chapter_modules(chapter_path, root):
        digest.update(name.encode())
        digest.update((root / "cgclib" / name).read_bytes())
    digest.update((root / "data" / "paper_values.yaml").read_bytes())
    return digest.hexdigest()


def content_key(chapter: str, chapter_path: Path, parameters: dict[str, Any]) -> str:
    """The cache key of one replicate run (see the module docstring)."""
    from importlib.metadata import version

    from .models import resolve_device, resolve_dtype

    models = {}
    for name in MODEL_PARAMETERS:
        model = parameters.get(name)
        if model:  # a test bed (`replicate_parameters` leaves no other model): weights checked on load
            card = json.loads((testbed_dir(model) / CARD_FILE).read_text())
            models[name] = card["weights_sha256"]
    for name in SINGLE_RUN_PARAMETERS:
        for model in parameters.get(name) or []:
            card_path = testbed_dir(model) / CARD_FILE
            trained = is_testbed(model) and card_path.is_file()
            models[f"{name}:{model}"] = json.loads(card_path.read_text())["weights_sha256"] if trained else "absent"
    resolved = dict(parameters)
    if "device" in parameters and parameters["device"] != "balanced":  # 'auto' means another thing on a GPU
        device = resolve_device(parameters["device"])
        resolved["device"] = str(device)
        if "dtype" in parameters:
            resolved["dtype"] = str(resolve_dtype(parameters["dtype"], device))
    spec = {
        "chapter": chapter,
        "code": _code_digest(chapter_path),
        "library": library_digest(chapter_path),
        "parameters": {k: v for k, v in sorted(resolved.items()) if k != SEEDS_PARAMETER},
        "weights": models,
        "versions": {name: version(name) for name in ("torch", "transformers", "numpy", "scipy", "pandas", "sae-lens")},
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


# --- the cache ---------------------------------------------------------------------------

STORE = ShippedStore(FOLDER)


def shipped_dir() -> Path:
    return STORE.shipped_dir


def local_dir() -> Path:
    return STORE.local_dir


def _relative(chapter: str, key: str) -> str:
    return f"{chapter}/{key}.json"


def _read_records(path: Path, chapter: str) -> list[dict]:
    from .ledger import validate_record

    payload = json.loads(path.read_text())
    records = payload["records"]
    for record in records:
        validate_record(record, notebook=chapter)
    return records


def cached_records(chapter: str, key: str) -> tuple[list[dict], Path] | None:
    """The records of a replicate run with this key, and where they were found; None on a miss."""
    path = STORE.find(_relative(chapter, key))
    return None if path is None else (_read_records(path, chapter), path)


def run_replicate(chapter: str, parameters: dict[str, Any]) -> list[dict]:
    """Execute `chapter` with `parameters` (papermill, as `cgc run` does) in a scratch folder
    and return the records it wrote."""
    from .book.chapters import run_chapter
    from .ledger import load_results

    with tempfile.TemporaryDirectory() as tmp:
        result = run_chapter(chapter, parameters, runs_dir=Path(tmp), progress=False)
        return load_results(result.results)


def _planned(chapter: str, parameters: dict[str, Any], seed: int) -> tuple[str, dict[str, Any], list[str]] | None:
    """(cache key, parameters, models) of the replicate run on `seed`; None when there is
    nothing to run (no test-bed model parameter, or replicates not trained), with a message."""
    from .book.chapters import get_chapter

    if seed == 0:
        raise ValueError("seed 0 is the chapter's own run; list the other training seeds")
    replicate = replicate_parameters(parameters, seed)
    if replicate is None:
        print(f"{chapter}: no model parameter names a seed-0 test bed, so there is nothing to replicate")
        return None
    models = [replicate[name] for name in MODEL_PARAMETERS if seed_zero_family(parameters.get(name) or "")]
    untrained = [m for m in models if member_status(m) != TRAINED]
    if untrained:
        print(f"seed {seed}: left out, {', '.join(untrained)} not trained with the recipe (`make testbed`)")
        return None
    return content_key(chapter, get_chapter(chapter).path, replicate), replicate, models


def _fetch(chapter: str, seed: int, planned: tuple[str, dict[str, Any], list[str]], run) -> list[dict]:
    """The records of one planned replicate run: cached, or run now and cached."""
    key, replicate, models = planned
    found = cached_records(chapter, key)
    if found is not None:
        records, path = found
        print(f"seed {seed}: {len(records)} records of {', '.join(models)} from {path}")
        return records
    print(f"seed {seed}: not cached for this code; running {chapter} on {', '.join(models)}", flush=True)
    records = run(chapter, replicate)
    payload = {"chapter": chapter, "key": key, "parameters": replicate, "records": records}
    STORE.put(_relative(chapter, key), _json_bytes(payload))
    return records


def replicate_records(
    chapter: str,
    parameters: dict[str, Any],
    seeds: Iterable[int],
    run: Callable[[str, dict[str, Any]], list[dict]] | None = None,
) -> dict[int, list[dict]]:
    """Each requested seed's records (from the cache, or on a miss by `run`, default
    `run_replicate`). A seed whose replicates are not trained with the recipe is left out,
    with a message."""
    run = run or run_replicate
    out: dict[int, list[dict]] = {}
    for seed in seeds:
        planned = _planned(chapter, parameters, seed)
        if planned is not None:
            out[seed] = _fetch(chapter, seed, planned, run)
    return out


def rebuild(chapters: Iterable[str] | None = None) -> int:
    """Compute (on a miss) the replicates of `chapters` (default: every chapter) at their
    default parameters and seeds, and ship them into `data/replicates` beside the other
    chapters' shipped runs; likewise the cached tables of each chapter's own default run
    (`cgclib.tables`) into `data/tables`. The number of replicate runs shipped."""
    from . import tables
    from .book.chapters import list_chapters

    keys: dict[str, list[str]] = {}
    table_files: dict[str, list[str]] = {}
    every = list_chapters()
    for name in chapters or every:
        params = every[name].parameters()
        if SEEDS_PARAMETER not in params:
            continue
        defaults = {p.name: p.default for p in params.values()}
        keys[name] = []
        for seed in defaults[SEEDS_PARAMETER]:
            planned = _planned(name, defaults, seed)
            if planned is not None:
                _fetch(name, seed, planned, run_replicate)
                keys[name].append(planned[0])
        if "ChapterTables(" in every[name].path.read_text():  # the chapter caches tables of its own run
            # the default run itself, so that every table it asks for is stored (a run cut
            # short would have stored some); tables already stored cost nothing
            print(f"{name}: the tables of its default run", flush=True)
            table_files[name] = _tables_of_run(
                name, {**defaults, SEEDS_PARAMETER: []}
            )  # the seed list is not in the key
    ship(keys)
    tables.STORE.ship(table_files)
    return sum(len(k) for k in keys.values())


def _tables_of_run(chapter: str, parameters: dict[str, Any]) -> list[str]:
    """Run the chapter and return the tables it read or computed (`tables.USED_LOG`)."""
    import os

    from .tables import USED_LOG

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "tables.txt"
        log.touch()
        os.environ[USED_LOG] = str(log)
        try:
            run_replicate(chapter, parameters)
        finally:
            del os.environ[USED_LOG]
        return sorted(set(log.read_text().split()))


def ship(keys: dict[str, list[str]]) -> int:
    """Ship the named cached runs (`keys[chapter]`) into `data/replicates`: each named
    chapter's shipped runs become exactly these, other chapters' stay as they are; the count
    in the manifest."""
    return STORE.ship({chapter: [_relative(chapter, key) for key in found] for chapter, found in keys.items()})


# --- pooling -----------------------------------------------------------------------------


def chapter_parameters(chapter: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """The values the running chapter's parameters have (`namespace`: the notebook's
    `globals()`, where papermill set them), to run its replicates with the same ones."""
    from .book.chapters import get_chapter

    names = list(get_chapter(chapter).parameters())
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ReplicateError(f"chapter {chapter!r}: parameters {missing} are not defined in this namespace")
    return {name: namespace[name] for name in names}


def family_table(records: list[dict]):
    """The family records as a table: pooled value and interval, each seed's value, verdicts."""
    import pandas as pd

    from .ledger import format_seeds

    return pd.DataFrame(
        [
            {
                "claim": r["id"],
                "pooled": r["ours"]["value"],
                "ci95": None if r["ours"]["ci95"] is None else tuple(round(x, 3) for x in r["ours"]["ci95"]),
                "per seed": ", ".join("-" if s["value"] is None else f"{s['value']:.3g}" for s in r["ours"]["seeds"]),
                "seeds' verdicts": format_seeds(r),
                "verdict": r["verdict"],
            }
            for r in records
        ],
        columns=["claim", "pooled", "ci95", "per seed", "seeds' verdicts", "verdict"],
    ).round(3)


def family_id(seed_zero_id: str) -> tuple[str, str] | None:
    """For a record id `<chapter>.<seed-0 test bed>.<claim>`: (family record id, family);
    None for a record about anything else."""
    chapter, _, rest = seed_zero_id.partition(".")
    for family in {cfg.family for cfg in CONFIGS.values()}:
        prefix = slug(replicate_name(family, 0)) + "."
        if rest.startswith(prefix):
            return f"{chapter}.family_{family}.{rest[len(prefix) :]}", family
    return None


def _seed_result(model: str, record: dict) -> SeedResult:
    ours = record["ours"]
    ci = ours["ci95"]
    return SeedResult(model, ours["value"], None if ci is None else (ci[0], ci[1]), ours["n"], ours["p"])


def _fisher_seed(model: str, record: dict) -> SeedResult:
    """A seed's correlation and its interval on Fisher's z scale, where a difference between
    correlations is closer to normal and its variance does not depend on the correlation."""
    seed = _seed_result(model, record)
    return SeedResult(
        model,
        None if seed.value is None else fisher_z(seed.value),
        None if seed.ci95 is None else (fisher_z(seed.ci95[0]), fisher_z(seed.ci95[1])),
        seed.n,
        seed.p,
    )


def family_differences(records: list[dict]):
    """For each claim pooled in two families: the difference of the families' pooled values,
    tested against the seed-to-seed variation (`replication.family_difference` on each
    family's random-effects pool of its seeds), with Holm-adjusted p-values over the table.
    Correlations (records bounded to [-1, 1]) are compared on Fisher's z scale."""
    import pandas as pd

    from .replication import family_difference
    from .verdicts import holm_adjusted

    by_claim: dict[str, dict[str, dict]] = {}
    for r in records:
        if r["rule"]["kind"] == "Describe":  # shown, not tested
            continue
        chapter, family, claim = r["id"].split(".", 2)
        by_claim.setdefault(f"{chapter}.{claim}", {})[family.removeprefix("family_")] = r
    rows = []
    for claim, families in by_claim.items():
        if len(families) != 2:
            continue
        (name_a, a), (name_b, b) = sorted(families.items())
        correlation = all(x["ours"].get("bounds") == [-1.0, 1.0] for x in (a, b))
        seeds = [
            [(_fisher_seed if correlation else _seed_result)(s["model"], {"ours": s}) for s in x["ours"]["seeds"]]
            for x in (a, b)
        ]
        pooled = [pool(s) for s in seeds]
        if any(p.value is None or p.se is None for p in pooled) or not (pooled[0].se or pooled[1].se):
            continue
        d = family_difference(*pooled)
        rows.append(
            {
                "claim": claim,
                "difference": f"{name_a} - {name_b}" + (" (Fisher z)" if correlation else ""),
                "value": d.value,
                "ci low": d.ci95[0],
                "ci high": d.ci95[1],
                "df": d.df,
                "p": d.p,
            }
        )
    table = pd.DataFrame(rows, columns=["claim", "difference", "value", "ci low", "ci high", "df", "p"])
    if not table.empty:
        adjusted = holm_adjusted(dict(zip(table["claim"], table["p"], strict=True)))
        table["p (Holm)"] = table["claim"].map(adjusted)
    return table.round(3)


def _pooled_correlation(units: list[dict]) -> tuple[float, tuple[float, float], float, str]:
    """A rank correlation over the units of every seed, ranked and permuted within seed."""
    xs = [np.asarray(u["x"], dtype=float) for u in units]
    ys = [np.asarray(u["y"], dtype=float) for u in units]
    r = stratified_spearman(xs, ys, n_permutations=STRATIFIED_PERMUTATIONS)
    # the permutation p is about these models' units, the random-effects p about the recipe:
    # the record's p is the larger, so that a significant verdict needs both
    p = max(r.p, r.p_recipe) if r.p_recipe is not None else r.p
    how = (
        f"Spearman rho over the {r.n} units of all seeds, ranked within seed; interval from the "
        "seeds' rhos, random effects on Fisher's z; p the larger of the within-seed permutation "
        f"test ({STRATIFIED_PERMUTATIONS} permutations) and that random-effects test"
    )
    return r.rho, r.ci95, p, how


def pool_records(own: list[dict], replicates: dict[int, list[dict]]) -> list[tuple[dict, dict]]:
    """For each seed-0 test-bed record of `own` that a replicate also recorded: (the seed-0
    record, the family record to add), the family record judged by the same rule on the pooled
    measurement. A replicate whose rule differs from seed 0's is an error: its verdict would
    not be about the same claim."""
    from .ledger import Ours, rule_from_dict

    out = []
    for record in own:
        found = family_id(record["id"])
        if found is None:
            continue
        new_id, family = found
        results = [_seed_result(replicate_name(family, 0), record)]  # type: ignore[arg-type]
        twins = [record]
        chapter, _, rest = record["id"].partition(".")
        claim = rest.partition(".")[2]
        for seed, records in sorted(replicates.items()):
            model = replicate_name(family, seed)  # type: ignore[arg-type]
            twin = next((r for r in records if r["id"] == f"{chapter}.{slug(model)}.{claim}"), None)
            if twin is None:
                continue
            if twin["rule"] != record["rule"]:
                raise ReplicateError(
                    f"{twin['id']} was judged by {twin['rule']}, seed 0 by {record['rule']}: not the same claim"
                )
            results.append(_seed_result(model, twin))
            twins.append(twin)
        if len(results) < 2:
            continue
        rule = rule_from_dict(record["rule"])
        units = [t["ours"].get("units") for t in twins]
        value: float | None
        ci95: tuple[float, float] | None
        p: float | None
        if all(u is not None for u in units):
            value, ci95, p, how = _pooled_correlation(units)
        else:
            pooled = pool(results)
            estimable = [r for r in results if r.value is not None]
            value, ci95 = pooled.value, pooled.ci95
            if all(has_interval(r) for r in estimable):
                how = "random-effects pool (Paule-Mandel tau^2, modified Hartung-Knapp interval on t(k-1))"
                p = pooled.p if all(r.p is not None for r in estimable) else None
            elif all(r.p is not None for r in estimable):
                # a permutation test's statistic need not be centred at 0 under its null, so
                # the seeds' p-values are combined rather than their values tested
                how = "mean over the seeds; p the seeds' p-values combined (signed Stouffer)"
                ci95, p = None, stouffer(estimable)
            else:
                how = "mean over the seeds, t(k-1) interval from their spread"
                p = None
        bounds = record["ours"].get("bounds")
        if bounds is None and all(u is not None for u in units):
            bounds = [-1.0, 1.0]  # a rank correlation
        if bounds is not None and ci95 is not None and (ci95[0] < bounds[0] or ci95[1] > bounds[1]):
            # a share or a correlation cannot leave its range: with three seeds the t(2)
            # interval around a value near the edge reaches past it
            low, high = (min(max(end, bounds[0]), bounds[1]) for end in ci95)
            ci95 = (low, high)
            how += f"; interval cut to the quantity's range [{bounds[0]:g}, {bounds[1]:g}]"
        models = ", ".join(r.model for r in results)
        ours = Ours(
            value=value,
            n=sum(r.n for r in results),
            setting=f"{family} recipe, {len(results)} training seeds ({models}): {how}",
            ci95=ci95,
            p=p,
            seeds=tuple(results),
            bounds=None if bounds is None else (bounds[0], bounds[1]),
        )
        family_record = {
            **{k: record[k] for k in ("notebook", "kind", "claim", "source", "paper", "section")},
            "id": new_id,
            "ours": ours.as_record(rule),
            "test": rule.describe(),
            "rule": record["rule"],
            "verdict": rule.verdict(ours.measurement()),
        }
        out.append((record, family_record))
    return out
