"""How many threads llama.cpp gets."""

from __future__ import annotations

from tui.engine.threads import physical_cores, thread_plan


def test_few_cores_leave_one_for_the_rest_of_the_machine():
    assert thread_plan(cores=1, logical=1) == thread_plan(cores=1, logical=1).__class__(1, 1, 1, True)
    two = thread_plan(cores=2, logical=2)
    assert (two.decode, two.batch, two.automatic) == (1, 1, True)
    assert (thread_plan(cores=4, logical=4).decode, thread_plan(cores=8, logical=8).decode) == (3, 8)
    assert "auto: 2 physical cores" in two.summary() and "1 for replies, 1 for prompts" in two.summary()


def test_prompts_use_every_core_when_hyperthreads_are_left_for_the_rest():
    plan = thread_plan(cores=4, logical=8)
    assert (plan.decode, plan.batch) == (3, 4)


def test_configured_counts_win():
    plan = thread_plan(n_threads=3, n_threads_batch=5, cores=2, logical=2)
    assert (plan.decode, plan.batch, plan.automatic) == (3, 5, False)
    assert "set in [engine]" in plan.summary()


def test_hyperthread_siblings_count_once(tmp_path):
    # Two cores with two hyperthreads each, as sysfs describes them.
    for cpu, core in enumerate((0, 1, 0, 1)):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert physical_cores({0, 1, 2, 3}, tmp_path) == 2
    assert physical_cores({0, 2}, tmp_path) == 1, "only the CPUs this process may use"
    assert physical_cores({0, 1}, tmp_path / "missing") == 2, "without sysfs, logical CPUs"
