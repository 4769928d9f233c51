"""Pure rules about dependencies between jobs of one enqueue batch: no SQL, no I/O."""
from __future__ import annotations

from typing import Optional


def find_cycle(graph: dict) -> Optional[list]:
    """A cycle in `graph` (id -> ids it waits for), as [a, b, ..., a], or None.

    Ids that are not keys (jobs already stored) end a path: a stored job cannot wait for a new
    one, so every cycle lies within the batch. Iterative, so a chain of 100,000 jobs is fine.
    """
    done: set = set()
    for start in graph:
        if start in done:
            continue
        path, on_path, stack = [], set(), [(start, iter(graph[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return path[path.index(child):] + [child]
            elif child in graph and child not in done:
                stack.append((child, iter(graph[child])))
                path.append(child)
                on_path.add(child)
    return None


def check_batch(jobs: list) -> None:
    """Refuse (BadInput) a job that waits for itself, or a cycle among the batch's jobs."""
    from .errors import BadInput

    graph = {job.id: job.after for job in jobs if job.id is not None and job.after}
    cycle = find_cycle(graph)
    if cycle is None:
        return
    if len(cycle) == 2:
        raise BadInput(f"job {cycle[0]} waits for itself")
    raise BadInput(f"the jobs wait for each other in a cycle: {' -> '.join(cycle)}; nothing was enqueued")
