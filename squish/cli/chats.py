"""`squish chats`: the saved chats, and `squish chats export ID` as Markdown or JSON.

The same SQLite history as the app (squish/history.py); the size shown per chat is its saved KV
cache (squish/engine/prompt_cache.py). Exit codes: 0 ok, 1 no such chat or the file exists,
2 the history cannot be read or the file cannot be written.
"""

import json
import sys
from pathlib import Path

from .parser import UsageError, chats_parser


def open_history():
    from ..history import FILE, History
    from ..models.store import squish_home

    return History(squish_home() / FILE)


def chat_dict(chat, cache_bytes: int) -> dict:
    return {
        "id": chat.id,
        "title": chat.title,
        "model": chat.model,
        "messages": chat.message_count,
        "created": chat.created,
        "updated": chat.updated,
        "kv_cache_bytes": cache_bytes,
    }


def export_json(chat, messages) -> str:
    return json.dumps(
        {
            **chat_dict(chat, 0),
            "system_prompt": chat.system_prompt,
            "summary": chat.summary,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "thinking": m.thinking,
                    "finish_reason": m.finish_reason,
                    "stats": m.stats,
                }
                for m in messages
            ],
        },
        indent=2,
    )


def chats(argv: list[str]) -> int:
    from ..engine import prompt_cache
    from ..errors import EngineFailure, UserError
    from ..history import HistoryError

    args = chats_parser().parse_args(argv)
    try:
        history = open_history()
    except HistoryError as exc:
        raise EngineFailure(str(exc)) from None
    try:
        if args.command == "export":
            chat = history.chat(args.id)
            if chat is None:
                raise UserError(f"no chat {args.id}: squish chats lists them")
            return export(history, chat, args)
        sizes = prompt_cache.usage(history.kv_dir)
        listed = [(chat, sizes.get(history.cache_path(chat.id).stem, 0)) for chat in history.chats()]
    finally:
        history.close()
    if args.json:
        print(json.dumps({"chats": [chat_dict(chat, size) for chat, size in listed]}))
        return 0
    if not listed:
        print("no saved chats yet: squish opens the app, squish -p answers and saves one")
        return 0
    from .models import ago, size, table

    rows = [
        [str(chat.id), ago(chat.updated), str(chat.message_count), size(cache) if cache else "-", chat.model or "-", chat.title]
        for chat, cache in listed
    ]
    print(table(["ID", "UPDATED", "MESSAGES", "KV CACHE", "MODEL", "TITLE"], rows))
    return 0


def export(history, chat, args) -> int:
    from ..tui.transcript import export_markdown

    messages = history.messages(chat.id)
    text = export_json(chat, messages) if args.json else export_markdown(chat, messages)
    if not args.output:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    path = Path(args.output).expanduser()
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"{path} exists; not overwritten") from None
    print(f"saved {path.resolve()}", file=sys.stderr)
    return 0
