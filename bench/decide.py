"""How fast the policy engine decides, in-process, for a 500-rule policy.

Prints the machine, then per kind of decision (tool call, LLM request, simple command, compound
command with && || ; | and redirections, lines with loops, conditionals, substitutions or
here-documents, which need the full bashlex parse) the decisions per second and p50/p99 latency: cold (every decision worked out in full,
caches emptied), side by side with the same decisions against the 7-rule demo policy (baseline),
warm (agents repeat themselves: decisions and parsed lines come from the caches), and, for
commands, parsing the line with bashlex alone (what a parser-only design would pay). Targets
(issue 3): p99 <= 20 us for a tool or LLM decision, <= 200 us for a compound command.
Bounded: a fixed number of decisions, then it stops by itself.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import bashlex
from machine import describe

from corral.policy.commands import clear_parse_cache
from corral.policy.engine import CompiledPolicy, EffectivePolicy, Request, Subject
from corral.policy.schema import Policy, load_policy

ROUNDS = 20_000
DEMO = Path(__file__).resolve().parent.parent / "corral/policy/demo.yaml"
WORDS = ["make", "npm", "cargo", "go", "pytest", "docker", "kubectl", "helm", "terraform", "git", "python", "node",
         "yarn", "pip", "aws", "gcloud", "psql", "redis-cli", "curl", "ssh"]


def big_policy() -> Policy:
    """500 rules spread over every action, the way a large organisation's policy grows."""
    demo = load_policy(DEMO.read_text())
    servers = {f"srv{i}": {"command": "npx", "args": [f"server-{i}"]} for i in range(30)}
    profiles = {f"prof{i}": {"targets": ["demo/echo"]} for i in range(50)}
    rules = [rule.model_dump(by_alias=True, exclude_none=True) for rule in demo.rules]
    effects = ["allow", "confirm", "approve", "deny"]
    for i in range(160):
        rules.append({"id": f"cmd-{i}", "effect": effects[i % 4], "action": "command.exec",
                      "match": {"command": [f"{WORDS[i % len(WORDS)]} sub{i} *", f"{WORDS[i % len(WORDS)]} x{i}"]}})
    for i in range(160):
        rules.append({"id": f"tool-{i}", "effect": effects[i % 4], "action": "tool.call",
                      "match": {"tool": f"srv{i % 30}/op{i}*"}, **({"when": {"team": "payments"}} if i % 3 else {})})
    for i in range(120):
        rules.append({"id": f"llm-{i}", "effect": effects[i % 4], "action": "llm.request",
                      "match": {"profile": f"prof{i % 50}"}, "when": {"role": ["developer", "contractor"][i % 2]}})
    while len(rules) < 500:
        i = len(rules)
        rules.append({"id": f"file-{i}", "effect": effects[i % 4], "action": "file.write",
                      "match": {"path": f"services/svc{i}/**"}})
    document = demo.model_dump(by_alias=True, exclude_none=True)
    document.update(rules=rules, mcp_servers={**document["mcp_servers"], **servers},
                    profiles={**document["profiles"], **profiles})
    return Policy.model_validate(document)


def workload(rng: random.Random) -> dict[str, list[Request]]:
    alice = Subject("alice@example.com", ("platform",), frozenset({"developer"}), "roo-code")
    priya = Subject("priya@example.com", ("payments",), frozenset({"developer"}), "cline")
    people = [alice, priya]
    simple = ["ls -la", "npm test", "git status", "make sub12 build", "rm -rf /tmp/x", "pytest -q tests",
              "docker sub4 run", "cat README.md"]
    compound = ["ls && rm -rf /", "git status | grep x && npm test", "cd app && make sub12 all > build.log",
                "bash -c 'git diff; git push --force origin main'", "make all 2>&1 | tee build.log",
                "find . -name '*.pyc' | xargs rm -f"]
    shell = ["for f in *.py; do python $f; done", "if [ -f x ]; then rm -rf build; fi",
             "echo $(git rev-parse HEAD) > rev.txt", "cat <<EOF > notes.txt\nhello\nEOF"]
    return {
        "tool call": [Request("tool.call", f"srv{rng.randrange(30)}/op{rng.randrange(200)}", rng.choice(people))
                      for _ in range(ROUNDS)],
        "LLM request": [Request("llm.request", rng.choice([f"prof{rng.randrange(50)}", "dev-fast", "release-safe"]),
                                rng.choice(people)) for _ in range(ROUNDS)],
        "simple command": [Request("command.exec", rng.choice(simple), rng.choice(people)) for _ in range(ROUNDS)],
        "compound command": [Request("command.exec", rng.choice(compound), rng.choice(people), mode="code")
                             for _ in range(ROUNDS // 4)],
        "shell syntax": [Request("command.exec", rng.choice(shell), rng.choice(people), mode="code")
                         for _ in range(ROUNDS // 10)],
    }


def measure(engine: EffectivePolicy, requests: list[Request], cold: bool = False) -> list[float]:
    """Latency of each decision; `cold` empties the decision and parse caches before each one,
    so every decision is worked out in full."""
    samples = []
    clock = time.perf_counter_ns
    for request in requests:
        if cold:
            engine._cache.clear()
            clear_parse_cache()
        started = clock()
        engine.decide(request)
        samples.append((clock() - started) / 1000)
    return samples


def parse_only(requests: list[Request]) -> list[float]:
    samples = []
    for request in requests:
        started = time.perf_counter_ns()
        bashlex.parse(request.resource)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99)]
    return f"{len(samples) / (sum(samples) / 1e6):>9,.0f}/s  p50 {statistics.median(samples):7.1f} us  p99 {p99:7.1f} us"


def main() -> None:
    print(describe())
    big = big_policy()
    started = time.perf_counter()
    large = EffectivePolicy(CompiledPolicy(big, 1))
    compile_ms = (time.perf_counter() - started) * 1000
    small = EffectivePolicy(CompiledPolicy(load_policy(DEMO.read_text()), 1))
    print(f"policy: {len(big.rules)} rules, compiled once in {compile_ms:.1f} ms; baseline: the demo's "
          f"{len(small.compiled.policy.rules)} rules\n")
    for kind, requests in workload(random.Random(7)).items():
        measure(large, requests[:500])  # warm up
        print(f"{kind:17} 500 rules, cold {summary(measure(large, requests, cold=True))}")
        print(f"{'':17} 7 rules, cold   {summary(measure(small, requests, cold=True))}")
        print(f"{'':17} 500 rules, warm {summary(measure(large, requests))}")
        if "command" in kind:
            print(f"{'':17} bashlex alone   {summary(parse_only(requests))}")
    print("\ntargets: p99 <= 20 us (tool call, LLM request), <= 200 us (compound command)")


if __name__ == "__main__":
    main()
