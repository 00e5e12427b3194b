"""Grade saved results again with the current checker, and list every record whose verdict changes.

For a change to mass/checker.py: the table's numbers move only where these records do.

    python scripts/regrade.py results/minimath-500/*.json
"""
import json
import sys

from mass.checker import extract_final_answer, is_equivalent


def main(paths: list[str]) -> int:
    changed = 0
    for path in paths:
        result = json.load(open(path, encoding="utf-8"))
        records = result.get("records")
        if not records:
            continue
        flips = []
        for r in records:
            prediction = extract_final_answer(r["generated"])
            now = is_equivalent(r["gold"], prediction)
            if now != r["correct"] or prediction != r["prediction"]:
                flips.append((r["id"], r["gold"], r["prediction"], prediction, r["correct"], now))
        acc = (sum(r["correct"] for r in records) + sum(now - was for *_, was, now in flips)) / len(records)
        print(f"{path}: {len(records)} records, accuracy {result['accuracy']:.3f} -> {acc:.3f}, {len(flips)} changed")
        for f in flips:
            print("   ", f)
        changed += len(flips)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
