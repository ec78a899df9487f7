"""The public CoBSAT protocol (UW-Madison-Lee-Lab/CoBSAT ``configs.py``, ``load_dataset.py``, ``evaluation_icl.py``).

Vocabulary order defines the option numbers of the judge's questions, so it is kept exactly. Items are stored raw
(``3d``, ``park``); prompts and options show their display words (``wireframe``, ``amusement park``).
"""

from __future__ import annotations

from dataclasses import dataclass

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "color": ("yellow", "white", "red", "purple", "pink", "orange", "green", "brown", "blue", "black"),
    "object": ("leaf", "hat", "cup", "chair", "car", "box", "book", "ball", "bag", "apple"),
    "animal": ("zebra", "tiger", "sheep", "pig", "monkey", "lion", "dog", "cow", "cat", "bird"),
    "style": ("watercolor", "sketch", "pixel", "origami", "lego", "icon", "graffiti", "futuristic", "3d", "old"),
    "action": ("swim", "sleep", "sing", "run", "read", "fly", "eat", "drink", "cry", "angry"),
    "background": ("beach", "desert", "glacier", "volcano", "park", "gym", "waterfall", "space", "cave", "seafloor"),
    "texture": ("wood", "wicker", "sequined", "plastic", "paper", "metal", "leather", "lace", "denim", "ceramic"),
}
DISPLAY_WORDS = {"3d": "wireframe", "park": "amusement park"}
ITEMS_OF_WORDS = {word: item for item, word in DISPLAY_WORDS.items()}
OPTION_SUFFIX = ". Answer the number only and do not include any other texts (e.g., 1)."
SHOTS = (2, 4, 6, 8)
PROMPTS_PER_TASK = 1000  # entries of prompts_list_default.json


def word(item: str) -> str:
    """The display word of a vocabulary item."""
    return DISPLAY_WORDS.get(item, item)


def item(word_or_item: str) -> str:
    """The vocabulary item of a display word (items map to themselves)."""
    return ITEMS_OF_WORDS.get(word_or_item, word_or_item)


@dataclass(frozen=True)
class Task:
    """One of the ten tasks: the demos' texts come from ``x_space``; the latent ``theta_space`` is shared by all images."""

    id: int
    name: str
    detail_space: str  # the theme is f"{detail_space}_{object_space}"
    object_space: str
    x_space: str

    @property
    def theta_space(self) -> str:
        return self.object_space if self.x_space == self.detail_space else self.detail_space

    @property
    def x_is_object(self) -> bool:
        return self.x_space == self.object_space

    @property
    def theme(self) -> str:
        return f"{self.detail_space}_{self.object_space}"

    def vocabulary(self, part: str) -> tuple[str, ...]:
        """``detail`` or ``obj`` options, in option order."""
        return VOCABULARIES[self.detail_space if part == "detail" else self.object_space]


TASKS: dict[int, Task] = {t.id: t for t in (
    Task(1, "Color-I", "color", "object", "color"),
    Task(2, "Color-II", "color", "object", "object"),
    Task(3, "Background-I", "background", "animal", "background"),
    Task(4, "Background-II", "background", "animal", "animal"),
    Task(5, "Style-I", "style", "object", "style"),
    Task(6, "Style-II", "style", "object", "object"),
    Task(7, "Action-I", "action", "animal", "action"),
    Task(8, "Action-II", "action", "animal", "animal"),
    Task(9, "Texture-I", "texture", "object", "texture"),
    Task(10, "Texture-II", "texture", "object", "object"),
)}
# Column order of the paper's tables (all "-I" tasks, then all "-II").
PAPER_ORDER = (1, 3, 5, 7, 9, 2, 4, 6, 8, 10)


def image_path(task: Task, x: str, theta: str) -> str:
    """The dataset image of demo item ``x`` with latent ``theta`` (raw items), relative to the dataset root."""
    detail, obj = (theta, x) if task.x_is_object else (x, theta)
    return f"{task.detail_space}_{obj}/{detail}_{obj}.jpg"


def question(task: Task, part: str) -> str:
    """The judge's question about the ``detail`` or the main object (``obj``), options numbered from 1."""
    head = (f"What is the {task.detail_space} (of the main object) in this image? Answer from the following options: "
            if part == "detail" else "What is the main object in this image? Answer from the following options: ")
    return head + "".join(f" ({n}){word(option)}" for n, option in enumerate(task.vocabulary(part), start=1)) + OPTION_SUFFIX


def parse_answer(reply: str, options: int = 10) -> int:
    """The option a reply picks: all its digits concatenated; -1 when there are none or the number is not an option."""
    digits = "".join(filter(str.isdigit, reply))
    try:
        number = int(digits)
    except ValueError:  # no digits, or only digit-like signs int() refuses (superscripts)
        return -1
    return number if 1 <= number <= options else -1


def true_label(task: Task, part: str, value: str) -> int:
    """The option number of a ground-truth value (a display word or an item)."""
    return task.vocabulary(part).index(item(value)) + 1
