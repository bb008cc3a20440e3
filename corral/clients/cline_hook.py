#!/usr/bin/env python3
"""Corral's hook for Cline, written by `corral connect cline` under each hook's name
(PreToolUse, TaskStart, ...): the name it runs under is the hook it is.

It sends what Cline writes on its input to Corral unchanged, and prints Corral's answer
(`{"cancel": ..., "errorMessage": ...}`) for Cline. When Corral cannot answer (unreachable, too
slow, an answer that is not a decision), the hooks that let work go ahead (PreToolUse, TaskStart,
TaskResume, UserPromptSubmit) cancel it, unless the policy said to fail open when this file was
written; the others let Cline go on. It always exits 0, since Cline ignores a failing hook.

Python 3's standard library only. The key is $CORRAL_KEY, or else the file corral.key beside
this script.
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

CORRAL_URL = "http://127.0.0.1:8700"  # Corral, as `corral connect cline` was told
FAIL_OPEN = False  # the policy's clients.fail_open when this file was written
TIMEOUT_S = 28  # Cline stops waiting for a hook after 30 seconds
GATES = ("PreToolUse", "TaskStart", "TaskResume", "UserPromptSubmit")
ANSWER_KEYS = ("cancel", "contextModification", "errorMessage")  # what Cline accepts from a hook


def hook_name(path):
    name = os.path.basename(path)
    return name[:-3] if name.endswith(".py") else name


def read_key(directory):
    key = os.environ.get("CORRAL_KEY", "").strip()
    if key:
        return key
    try:
        with open(os.path.join(directory, "corral.key"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def ask_corral(hook, body, key):
    """(Corral's answer, "") or (None, why there is none)."""
    url = CORRAL_URL + "/v1/hooks/cline?hook=" + urllib.parse.quote(hook)
    headers = {"Content-Type": "application/json", "User-Agent": "corral-cline-hook"}
    if key:
        headers["Authorization"] = "Bearer " + key
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                text = response.read()
        except urllib.error.HTTPError as error:  # a refusal still carries Corral's answer
            text = error.read()
    except (OSError, ValueError) as error:
        return None, describe(error)
    try:
        answer = json.loads(text)
    except ValueError:
        return None, "its answer is not JSON"
    if not isinstance(answer, dict) or not isinstance(answer.get("cancel"), bool):
        return None, "its answer is not a decision"
    return {name: answer[name] for name in ANSWER_KEYS if name in answer}, ""


def describe(error):
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "no answer within {} s".format(TIMEOUT_S)
    return str(reason) or type(reason).__name__


def fallback(hook, why):
    """What Cline is told when Corral cannot answer."""
    if hook in GATES and not FAIL_OPEN:
        return {"cancel": True, "errorMessage": "Corral at {} could not be reached ({}); the policy blocks tools "
                                                "while Corral cannot decide".format(CORRAL_URL, why)}
    return {"cancel": False}


def main():
    hook = hook_name(__file__)
    try:
        body = sys.stdin.buffer.read()
        answer, why = ask_corral(hook, body, read_key(os.path.dirname(os.path.abspath(__file__))))
    except Exception as error:  # whatever went wrong, Cline gets an answer
        answer, why = None, "the hook failed: {}".format(error)
    sys.stdout.write(json.dumps(answer if answer is not None else fallback(hook, why)) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
