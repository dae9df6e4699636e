"""Greedy answers replayed through the drafting rule on a cost model: why drafts earn what they do.

benchmarks/speculative.py times drafts; this explains its figures. For each task it takes the
model's greedy answer as token ids (mlx-lm on the engine's kernels, cut where the engine would
end it: EOS, the repetition guard, --max-tokens), then replays the answer pass by pass, with a
plain step costing 1 and a pass of k drafts fixed + row * k (row: an extra row's cost in steps,
about 0.3 on the native CPU kernels timed alone and 0.9 on MLX's stock CPU path; fixed: 1 by
default; the passes the engine's decode loop timed on the native kernels during edit fit fixed
0.7 and row 0.44, see docs/speculative.md). Three ways to draft:

- `rule`: squish.engine.speculative's Drafter as the code has it, fed every prediction's outcome
  and every step's and pass's modelled seconds (plain steps are not pipelined here, and forced
  drafts do not occur: these tasks have no grammar);
- `always`: K_MAX tokens whenever the lookup has a continuation;
- `bound`: the lookup's drafts cut at their first wrong token, as a rule that knew the answer
  would draft them: what any draft length rule can reach with this lookup.

It reports, per task and row cost, the modelled speed-up (tokens over cost), the passes and the
drafted and kept tokens. Nothing here is timed, so there are no warm-ups or spreads: the numbers
are exact for the answer and the model of costs.

    uv run python benchmarks/draft_replay.py [--max-tokens 256] [--tasks edit,quote] [--rows 0.2,0.3,0.9] [--fixed 1.0]

Results are appended to benchmarks/results/<timestamp>_draft-replay.json.
"""

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from squish.cli.bench_results import commit, save
from squish.cli.bench_tasks import EDIT, LETTER, LONG, QUOTE, SHORT, STORY
from squish.engine.speculative import K_MAX, Drafter, PromptLookup
from squish.models import store
from squish.models.hardware import describe

TASKS = {t.name: t for t in (EDIT, QUOTE, LONG, SHORT, STORY, LETTER)}


def greedy_answers(names: list[str], max_tokens: int) -> tuple[str, dict]:
    """(kernel path, task -> {"prompt": ids, "answer": ids}) from the embedded model."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.utils import load

    from squish.engine import native
    from squish.engine.engine import Engine
    from squish.engine.sampling import repeating_period

    engine = Engine()  # on a fresh machine its first load imports the embedded GGUF
    loaded = store.load(engine, None).collect()
    engine.shutdown()
    if loaded.error:
        raise SystemExit(f"draft_replay: {loaded.error.message}")
    model, tokenizer = load(loaded.loaded.path)
    kernels = native.prepare(model)
    eos = set(tokenizer.eos_token_ids)
    out = {}
    for name in names:
        prompt = list(tokenizer.apply_chat_template(TASKS[name].messages(), add_generation_prompt=True))
        cache = make_prompt_cache(model)
        logits = model(mx.array(prompt)[None], cache=cache)
        answer = []
        while len(answer) < max_tokens:
            token = int(mx.argmax(logits[0, -1]).item())
            if token in eos:
                break
            answer.append(token)
            if repeating_period(answer):
                break
            logits = model(mx.array([[token]]), cache=cache)
        out[name] = {"prompt": prompt, "answer": answer}
        print(f"{name}: {len(prompt)} prompt tokens, {len(answer)} answer tokens", file=sys.stderr)
    return kernels, out


def replay(prompt: list[int], answer: list[int], way: str, row: float, fixed: float = 1.0) -> dict:
    lookup = PromptLookup(prompt)
    drafter = Drafter()
    i, cost, passes, drafted, kept = 0, 0.0, 0, 0, 0
    while i < len(answer):
        left = len(answer) - i - 1
        limit = drafter.limit() if way == "rule" else K_MAX
        drafts = lookup.draft(min(limit, left)) if limit else []
        right = 0
        while right < len(drafts) and drafts[right] == answer[i + right]:
            right += 1
        if way == "bound":
            drafts = drafts[:right]
        if not drafts:
            prediction = lookup.draft(1)
            if prediction:
                hit = prediction[0] == answer[i]
                drafter.predicted(int(hit), int(not hit))
            drafter.plain_step(1.0)
            cost += 1.0
            lookup.append(answer[i])
            i += 1
            continue
        seconds = fixed + row * len(drafts)
        drafter.predicted(right, int(right < len(drafts)))
        drafter.checked(len(drafts), right, seconds)
        cost, passes, drafted, kept = cost + seconds, passes + 1, drafted + len(drafts), kept + right
        lookup.extend(answer[i : i + right + 1])
        i += right + 1
    return {"speedup": len(answer) / cost if cost else 1.0, "passes": passes, "drafted": drafted, "kept": kept}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names (default: all)")
    parser.add_argument("--rows", default="0.2,0.3,0.9", help="extra-row costs in plain steps to model")
    parser.add_argument("--fixed", type=float, default=1.0, help="a checked pass's cost beside its rows, in steps")
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    names = args.tasks.split(",")
    if unknown := sorted(set(names) - set(TASKS)):
        parser.error(f"unknown tasks {unknown}; there are {sorted(TASKS)}")
    rows = [float(r) for r in args.rows.split(",")]
    kernels, answers = greedy_answers(names, args.max_tokens)
    ways = ("rule", "always", "bound")
    table = {
        name: {
            "answer_tokens": len(a["answer"]),
            "rows": {str(row): {way: replay(a["prompt"], a["answer"], way, row, args.fixed) for way in ways} for row in rows},
        }
        for name, a in answers.items()
    }
    result = {
        "name": "draft-replay",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "kernels": kernels,
        "plan": {"max_tokens": args.max_tokens, "rows": rows, "fixed": args.fixed},
        "hardware": describe(),
        "tasks": table,
        "answers": answers,
    }
    path = save(result, Path(args.results_dir), "draft-replay")
    print(f"{'task':8}{'row':>5}{'tokens':>8}  {'rule':>22}  {'always':>22}  {'bound':>22}")
    for name, t in table.items():
        for row, ways in t["rows"].items():
            cells = [f"{w['speedup']:.2f}x {w['kept']:>3}/{w['drafted']:<3} in {w['passes']:>3}" for w in ways.values()]
            print(f"{name:8}{row:>5}{t['answer_tokens']:>8}  " + "  ".join(f"{c:>22}" for c in cells))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
