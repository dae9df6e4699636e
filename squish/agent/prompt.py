"""Prompting: squish's system prompt, tools through the chat template or squish's own section.

The system prompt is squish's alone: it is always the first message, and user, file and tool
text only ever appears in later messages, with chat-control markers (`<|im_start|>` and
kin) broken up so that no content can open a turn of its own.
"""

import json
import re
from pathlib import Path

from .parser import CLOSE, OPEN

# `<|...|>` markers (ChatML, Llama 3, Phi) and Gemma's turn markers.
CONTROL = re.compile(r"<\|([A-Za-z0-9_]+)\|>|<(/?)(start_of_turn|end_of_turn)>")

AGENT_ROLE = (
    "You are an assistant that acts in the user's workspace (a folder) by calling tools. "
    "Call a tool when the task needs files, folders or commands; answer from the tool results."
)


def neutralize(text: str) -> str:
    """Break chat-control markers so that content cannot start a system (or any) turn."""
    return CONTROL.sub(
        lambda m: f"<\u200b|{m.group(1)}|\u200b>" if m.group(1) else f"<\u200b{m.group(2)}{m.group(3)}>", text
    )


def template_supports_tools(model_dir: str | Path) -> bool:
    """Whether the model's chat template renders a `tools` argument (e.g. Qwen 2.5, Llama 3.1)."""
    model_dir = Path(model_dir)
    templates = []
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        templates.append(jinja.read_text(encoding="utf-8", errors="replace"))
    for name in ("chat_template.json", "tokenizer_config.json"):
        try:
            config = json.loads((model_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        template = config.get("chat_template")
        if isinstance(template, list):
            templates += [t.get("template", "") for t in template if isinstance(t, dict)]
        elif isinstance(template, str):
            templates.append(template)
    return any(re.search(r"\btools\b", t) for t in templates)


def signature(tool) -> str:
    """`name(arg: type, optional?: type) - description`: a compact listing (prompt tokens cost time)."""
    properties = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    args = ", ".join(
        f"{name}{'' if name in required else '?'}: {spec.get('type', 'any') if isinstance(spec, dict) else 'any'}"
        for name, spec in properties.items()
    )
    return f"- {tool.name}({args}): {tool.description}"


def call_text(name: str, arguments: dict) -> str:
    return f"{OPEN}{json.dumps([{'name': name, 'arguments': arguments}], ensure_ascii=False)}{CLOSE}"


def system_prompt(tools, template_tools: bool) -> str:
    if template_tools:
        # The template adds the tools and its own call format.
        return f"{AGENT_ROLE} When you can answer, reply in plain text without a tool call."
    # A compact listing instead of JSON schemas: prompt tokens cost time (a CPU prefills
    # ~10 tokens/s). Few-shot examples were tried and dropped: the 135M model copies their
    # arguments (benchmarks/results, docs/agent.md).
    first = tools[0]
    first_arg = next(iter(first.parameters.get("properties", {})), None)
    listing = "\n".join(signature(tool) for tool in tools)
    return (
        f"{AGENT_ROLE}\n\nTools:\n{listing}\n\n"
        f"To call a tool, reply with only:\n{call_text(first.name, {first_arg: '.'} if first_arg else {})}\n"
        f"If no tool is needed, reply {OPEN}[]{CLOSE}\n"
        "The result comes back in <tool_response></tool_response>."
    )


def tool_result_message(name: str, output: str, ok: bool, template_tools: bool) -> dict:
    body = neutralize(output if ok else f"error: {output}")
    if template_tools:
        return {"role": "tool", "name": name, "content": body}
    return {"role": "tool", "content": f"<tool_response>\n{body}\n</tool_response>"}


def assistant_call_message(text: str, calls: list[dict], template_tools: bool) -> dict:
    """The model's own turn, as the template expects it back."""
    if template_tools:
        return {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls
            ],
        }
    if OPEN in text and CLOSE not in text:
        text += CLOSE  # constrained replies end at the JSON; the model should see its calls closed
    return {"role": "assistant", "content": neutralize(text)}


def correction(reason: str, tools, likely: str | None = None) -> str:
    names = ", ".join(tool.name for tool in tools)
    hint = f" The tool for this is most likely {likely}." if likely else ""
    return (
        f"Your tool call was rejected: {reason}\n"
        f'Reply with one corrected call, {OPEN}[{{"name": ..., "arguments": {{...}}}}]{CLOSE}, '
        f"using a tool among: {names}.{hint}"
    )
