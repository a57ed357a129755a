"""What the action zips are built for: the OpenWhisk ``python:3.11`` runtime.

Its interpreter (CPython 3.11) and platform (Linux x86-64, glibc 2.36), the distributions its
image already ships (:data:`RUNTIME_PACKAGES`: the zips never ship these), OpenWhisk's limits
on an action's code, and the layout the runtime reads from a zip (``__main__.py``,
``virtualenv/bin/activate_this.py``, ``virtualenv/lib/python3.11/site-packages/...``).

It also holds :data:`PACKAGE_TRIMS`: explicit, checked cuts to a shipped distribution (minio's
``__init__`` imports its admin client, which pulls in pycryptodome, argon2-cffi and cffi;
owdedup never uses it), one of the two things that make a cold start cheaper than shipping
the packages as pip installs them (the other is the bytecode: :mod:`owdedup.deploy.zipper`).
A trim whose text is missing fails the build, and no shipped file may import a distribution a
trim left out (:mod:`owdedup.deploy.install` applies and checks them).

The other build modules (:mod:`~owdedup.deploy.needs`, :mod:`~owdedup.deploy.install`,
:mod:`~owdedup.deploy.zipper`, :mod:`~owdedup.deploy.build`) all import this one, so it also
holds what they share: :class:`BuildError` and the ``Log`` callback type.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from owdedup.runtime.errors import OwdedupError

# The target: what the OpenWhisk python:3.11 runtime is ------------------------------------

#: The only runtime kind these zips are built for (its virtualenv is CPython 3.11 only).
RUNTIME_KIND: Final = "python:3.11"
RUNTIME_PYTHON: Final = "3.11"
#: The runtime image is python:3.11-bookworm (glibc 2.36): wheels tagged manylinux2014 up to
#: manylinux_2_36 load there. Newest first, the order pip prefers them in.
RUNTIME_PLATFORMS: Final[tuple[str, ...]] = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
)
#: Environment markers of the runtime, for the requirements of the packages we ship.
RUNTIME_MARKERS: Final[Mapping[str, str]] = MappingProxyType({
    "implementation_name": "cpython",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": f"{RUNTIME_PYTHON}.0",
    "python_version": RUNTIME_PYTHON,
    "sys_platform": "linux",
})

#: Distributions the runtime image already has (apache/openwhisk-runtime-python,
#: core/python311Action/requirements.txt, plus pip, six and wheel from its Dockerfile, plus
#: requests' own dependencies), name -> version; None where the version is whatever pip
#: chose when the image was built. The zips never ship these; ``owdedup serve`` installs
#: them (:mod:`owdedup.actionloop.site`). requests: 2.32.2 in the image since 2024-09
#: (still older than ibm-cloud-sdk-core's minimum, so the zips that need it carry theirs).
RUNTIME_PACKAGES: Final[Mapping[str, str | None]] = MappingProxyType({
    "beautifulsoup4": "4.11.2",
    "httplib2": "0.21.0",
    "kafka-python": "2.0.2",
    "lxml": "4.9.2",
    "netifaces": "0.11.0",
    "python-dateutil": "2.8.2",
    "requests": "2.32.2",
    "scrapy": "2.11.2",
    "setuptools": "67.4.0",
    "simplejson": "3.18.3",
    "twisted": "24.7.0",
    "virtualenv": "20.19.0",
    "pip": None,
    "six": None,
    "wheel": None,
    # requests' dependencies
    "certifi": None,
    "charset-normalizer": None,
    "idna": None,
    "urllib3": None,
})


@dataclass(frozen=True)
class Trim:
    """A build-time cut to one shipped distribution: code of it that owdedup never runs and
    that costs cold-start time (and zip bytes) through what it imports.

    *drop_requirements* of the distribution are not installed (nor whatever only they pull
    in); *edits* are ``(file, exact text, replacement)`` in its files (relative to
    site-packages), each text required to occur exactly once, so an upgrade that moves it
    fails the build; *remove* are files left out (that import what was dropped).
    """

    reason: str
    drop_requirements: tuple[str, ...] = ()
    edits: tuple[tuple[str, str, str], ...] = ()
    remove: tuple[str, ...] = ()


#: Every trim, by the distribution it cuts. One place: nothing else in the build edits a
#: third-party package.
PACKAGE_TRIMS: Final[Mapping[str, Trim]] = MappingProxyType({
    "minio": Trim(
        reason="minio/__init__.py imports MinioAdmin (minio.minioadmin -> minio.crypto -> "
               "pycryptodome, argon2-cffi -> cffi -> pycparser); owdedup.runtime.stores.s3 "
               "uses the S3 client only (minio.Minio, .error, .commonconfig, .helpers); measured: "
               "import minio 113 -> 75 ms, 3.2 MiB less per zip",
        drop_requirements=("argon2-cffi", "pycryptodome"),
        edits=(("minio/__init__.py",
                "from .minioadmin import MinioAdmin as MinioAdmin\n",
                "# owdedup: MinioAdmin left out (owdedup.deploy.runtime.PACKAGE_TRIMS)\n"),),
        remove=("minio/minioadmin.py", "minio/crypto.py"),
    ),
})

#: OpenWhisk's limit on an action's code. The create request carries the zip base64-encoded
#: (4/3 larger), and a standalone controller refuses requests over 50 MiB: see size_report.
MAX_ZIP_BYTES: Final = 48 * 1024 * 1024
REQUEST_LIMIT_BYTES: Final = 50 * 1024 * 1024

# The zip's layout, as the runtime reads it ------------------------------------------------

PACKAGE: Final = "owdedup"
PINS_FILE: Final = f"{PACKAGE}/runtime/_pins.json"
ACTIVATE_THIS: Final = "virtualenv/bin/activate_this.py"
SITE_PACKAGES: Final = f"virtualenv/lib/python{RUNTIME_PYTHON}/site-packages"

# What every build step shares -------------------------------------------------------------

Log = Callable[[str], None]


class BuildError(OwdedupError):
    """An action zip cannot be planned or built."""

    kind = "build"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
