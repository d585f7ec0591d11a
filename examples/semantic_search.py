"""QA semantic search over this project's FAQ (the original's "QA semantic search engine in 3 minutes").

Every question of docs/FAQ.md is encoded once; a query is encoded and the questions are ranked by the cosine of
their vectors. Needs a running server (`make serve`).

    .venv/bin/python examples/semantic_search.py "can I run the server without a GPU"
"""
import argparse
import re
from pathlib import Path

import numpy as np

from bert_serving.client import BertClient
from server_hint import add_timeout_flag, hint_when_no_server

FAQ = Path(__file__).resolve().parents[1] / "docs" / "FAQ.md"
QUESTION = re.compile(r"^### (.+\?)\s*$")  # each FAQ question is a level-3 heading ending in '?'


def load_questions(path: Path) -> list[str]:
    return [m.group(1) for line in path.read_text(encoding="utf-8").splitlines() if (m := QUESTION.match(line))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", help="your question")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    add_timeout_flag(parser)
    args = parser.parse_args()

    questions = load_questions(FAQ)
    print(f"{len(questions)} questions loaded, avg. len of {np.mean([len(q.split()) for q in questions]):.0f} words")
    with hint_when_no_server(f"{args.ip}:{args.port}"), \
            BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout) as bc:
        doc_vecs = bc.encode(questions)
        query_vec = bc.encode([args.query])[0]
    # cosine: the dot product of the query with each question, over both lengths
    scores = doc_vecs @ query_vec / (np.linalg.norm(doc_vecs, axis=1) * np.linalg.norm(query_vec))
    for index in np.argsort(scores)[::-1][:args.top_k]:
        print(f"> {scores[index]:.3f}\t{questions[index]}")


if __name__ == "__main__":
    main()
