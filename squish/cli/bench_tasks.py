"""The prompts `squish bench` and benchmarks/speculative.py measure, as chat messages.

Each task is greedy-decoded by every side from the same rendered prompt. `copy` says whether the
answer can be copied from the prompt (where prompt-lookup drafting can pay) or has to be new.
"""

from dataclasses import dataclass

SYSTEM = "You are a helpful assistant."

PASSAGE = """\
The first machines that we would now call bicycles appeared in Germany in 1817, when Karl Drais
built a wooden "running machine" with two wheels in a line and a handlebar to steer the front
one. The rider sat between the wheels and pushed against the ground with both feet. It had no
pedals, no chain and no brakes, yet on a good road it was faster than walking, and for a few
years it was fashionable in Paris and London. Doctors warned that it would ruin the legs of
young men, and several cities banned it from their pavements.

Pedals came in the 1860s, fixed straight to the front wheel. Because one turn of the pedals
gave one turn of the wheel, makers gave the front wheel a larger and larger diameter to go
faster, until the "high wheeler" of the 1870s had a front wheel as tall as a man. It was fast
and elegant but dangerous: a stone in the road could throw the rider over the handlebar, head
first, from a height of more than a metre. Riding one was a sport for the young and the bold.

The safety bicycle of the 1880s solved this with a chain that drove the rear wheel through
gears, so both wheels could be of the same modest size and the rider sat low between them. In
1888 John Boyd Dunlop fitted air-filled rubber tyres to his son's tricycle, and within a few
years pneumatic tyres made riding smooth enough for long journeys. Prices fell as factories
learned to make steel tubes and ball bearings in large numbers, and by 1900 the bicycle had
become the cheapest way for ordinary workers to travel to a job in the next town.

The bicycle also changed who could travel. Women rode in large numbers in the 1890s, and the
need for clothes one could pedal in helped to end the long skirts and tight corsets of the
time. Mechanics who learned their trade on bicycles went on to build cars and aeroplanes: the
Wright brothers ran a bicycle shop in Ohio before they built their first flying machine.
"""

SOURCE = '''\
import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Reading:
    station: str
    day: str
    rain_mm: float


def parse_line(row: list[str]) -> Reading:
    """One CSV row as a Reading; the rain column may be empty."""
    station, day, rain = row
    return Reading(station.strip(), day.strip(), float(rain) if rain else 0.0)


def load(path: Path) -> list[Reading]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)  # the header
        return [parse_line(row) for row in reader]


def wettest_day(readings: list[Reading]) -> Reading:
    return max(readings, key=lambda reading: reading.rain_mm)


def total_rain(readings: list[Reading], station: str) -> float:
    return sum(r.rain_mm for r in readings if r.station == station)


if __name__ == "__main__":
    readings = load(Path("rain.csv"))
    print("wettest:", wettest_day(readings))
    print("total at A:", total_rain(readings, "A"))
'''


@dataclass(frozen=True)
class Task:
    name: str
    user: str
    copy: bool  # the answer can be copied from the prompt

    def messages(self) -> list[dict]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.user}]


# `squish bench`: a short question, a ~500-token prompt, and an echo-heavy file rewrite.
SHORT = Task("short", "Explain how a refrigerator keeps food cold, step by step.", copy=False)
LONG = Task("long", f"{PASSAGE}\nRetell the history in the text above in your own words.", copy=True)
EDIT = Task(
    "edit",
    f"Here is a Python file:\n\n```python\n{SOURCE}```\n\n"
    "Rename the function parse_line to parse_row everywhere. Reply with the whole updated file.",
    copy=True,
)
BENCH_TASKS = (SHORT, LONG, EDIT)

# benchmarks/speculative.py adds these: two more echo-heavy tasks and two with nothing to copy.
QUOTE = Task(
    "quote",
    f"{PASSAGE}\nQuote the third paragraph of the text above exactly, word for word.",
    copy=True,
)
STORY = Task("story", "Write a short story about a lighthouse keeper who finds a message in a bottle.", copy=False)
LETTER = Task("letter", "Write a letter to a friend describing your first week in a new city.", copy=False)
WARMUP = Task("warmup", "Hi.", copy=False)
