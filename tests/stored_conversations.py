"""Fixed conversations written straight into a store: the same text every time, so screenshots and
benchmarks never depend on what a model happens to say."""

from __future__ import annotations

from tui.store import Conversation, MessageState, Store

QUESTIONS = (
    "How do I count the animals of each species in a CSV file?",
    "Which enclosure does each animal live in?",
    "动物园里的大熊猫每天吃多少竹子？",
    "Can you show that as a loop?",
)

REPLIES = (
    """Read the file with `csv.DictReader` and count with a `Counter`:

```python
import csv
from collections import Counter


def count_species(path):
    with open(path, newline="") as handle:
        return Counter(row["species"] for row in csv.DictReader(handle))
```

`most_common()` then lists the largest groups first.""",
    """| animal | enclosure | keeper |
|---|---|---|
| giraffe | savanna | Amara |
| penguin | aquarium | Jonas |
| red panda | bamboo forest | Mei |

Each keeper looks after one enclosure.""",
    """大熊猫每天要吃十二到三十八公斤的竹子，几乎一整天都在进食。

- 早上：新鲜的竹笋
- 中午：竹叶和竹竿
- 晚上：水果和特制的窝头""",
    """A plain loop does the same without the standard library's help:

1. start with an empty `dict`;
2. add one for each row's species;
3. sort the items by their count.

```python
counts = {}
for row in rows:
    counts[row["species"]] = counts.get(row["species"], 0) + 1
```""",
)

FIGURES = {
    "finish_reason": "stop",
    "prompt_tokens": 120,
    "prompt_tokens_evaluated": 20,
    "completion_tokens": 96,
    "seconds_to_first_token": 0.05,
    "decode_seconds": 1.2,
    "context_size": 4096,
}


def stored_conversation(
    store: Store, messages: int, *, title: str = "A day at the zoo", model: str = ""
) -> Conversation:
    """A conversation of ``messages`` messages, questions and replies in turn: code blocks, a table, Chinese
    text and lists, each reply with fixed figures."""
    conversation = store.create_conversation(
        title=title, model=model or "smollm2-135m-instruct", system_prompt="", params={}
    )
    for index in range(messages):
        turn = index // 2
        if index % 2 == 0:
            store.add_message(conversation.id, "user", QUESTIONS[turn % len(QUESTIONS)])
        else:
            store.add_message(
                conversation.id,
                "assistant",
                REPLIES[turn % len(REPLIES)],
                model=conversation.model,
                state=MessageState.DONE,
                stats=FIGURES,
            )
    return store.conversation(conversation.id)
