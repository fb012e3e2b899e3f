"""Fixtures: `cluster` (session: PostgreSQL primary, 2 replicas, redis) and
`sluice` (a factory starting pooler processes, stopped after each test)."""

import os
import re
import shutil

import pytest

from sluice_fixture import Cluster, Sluice, chown_run_as, make_run_dir


@pytest.fixture(scope="session")
def cluster():
    c = Cluster()
    started = c.start()
    yield c
    if started:
        c.stop()


@pytest.fixture(scope="session")
def run_dir(request):
    path = make_run_dir()
    yield path
    if request.session.testsfailed:
        print(f"\npooler configs and logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pool_user(cluster):
    """A role of this test run alone (in every default userlist, with a plain
    password): count its backends on the primary without other poolers or
    sessions on the shared cluster interfering."""
    name = f"it_user_{os.getpid()}"
    cluster.create_role(name, name + "_pw")
    yield name
    cluster.drop_role(name)


@pytest.fixture(scope="session")
def pool_user2(cluster):
    """A second such role."""
    name = f"it_user2_{os.getpid()}"
    cluster.create_role(name, name + "_pw")
    yield name
    cluster.drop_role(name)


@pytest.fixture
def primary_conn(cluster):
    with cluster.primary_conn() as conn:
        yield conn


@pytest.fixture
def sluice(cluster, run_dir, request):
    """sluice(config=None, userlist=None, args=(), start=True, binary=None,
    workers=None) -> Sluice.

    config: ini text, or a dict merged into sluice_fixture.DEFAULT_CONFIG;
    either gets `workers = $SLUICE_TEST_WORKERS` (default 1) unless it sets
    workers itself (PgBouncer's never do).
    userlist: userlist.txt text, or a {user: password-or-secret} dict;
    default: the cluster's users with plain passwords, md5_user as md5.
    binary, workers: see sluice_fixture.Sluice.
    Every instance is stopped (SIGTERM) and checked at teardown."""
    instances = []

    def factory(config=None, userlist=None, args=(), start=True, binary=None, workers=None):
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        workdir = run_dir / f"{name}-{len(instances)}"
        workdir.mkdir()
        chown_run_as(workdir)
        instance = Sluice(cluster, workdir, config, userlist, args, binary, workers)
        instances.append(instance)
        return instance.start() if start else instance

    yield factory
    errors = []
    for instance in instances:
        try:
            instance.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            instance.release_ports()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)
