"""``python -m edgesnn.fit.worker SPEC``: one trial in its own process (see edgesnn.fit.trial).

SPEC is a JSON file the search wrote: the recipe, the run folder, the board and the trust given.
The metrics (or the trial's one-line error) go to the result file it names, written whole by a rename;
a crash leaves no result file, which the search records as a failed trial.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgesnn import threads
from edgesnn.files import write_json


def main(spec_path: str) -> None:
    from edgesnn.fit.trial import run_here
    from edgesnn.fit.space import recipe_class

    spec = json.loads(Path(spec_path).read_text())
    threads.use(int(spec.get("threads", 1)))  # before torch computes anything
    trust = spec["trust_code"] if isinstance(spec["trust_code"], bool) else set(spec["trust_code"])
    result = run_here(recipe_class().model_validate(spec["recipe"]), Path(spec["folder"]), spec["board"], trust)
    write_json(spec["result"], result)


if __name__ == "__main__":
    main(sys.argv[1])
