from setuptools import find_packages, setup

setup(
    name="binge-plus",
    version="0.1.0",
    description="Binge+: a peer-assisted video streaming server on Tornado and Pravega",
    python_requires=">=3.11,<3.12",
    py_modules=["server", "settings", "backends", "atomic_write", "api_paths"],
    packages=find_packages(include=["handlers", "media", "captions", "presence", "peers", "ops", "pravega_workers"]),
    package_data={"handlers": ["templates/*.html", "static/*"]},
    install_requires=[
        "tornado>=6.4",
        "webvtt-py>=0.5",
        "ujson>=5.9",
        "PyYAML>=6.0",
        "av>=12.0",
        "charset-normalizer>=3.3",
        "pravega==0.3.8",
        "prometheus_client>=0.20",
        # WebRTC data channels to peers no HTTP request reaches; 1.16 is the first whose av range holds our av 18.
        "aiortc>=1.16",
    ],
    extras_require={
        # redbot is pinned: tests/test_redbot.py fails on its notes, which change between releases.
        "test": ["pytest>=8", "pytest-tornado>=0.8", "pytest-timeout>=2.3", "hypothesis>=6.100", "playwright>=1.40",
                 "pysubs2>=1.7", "redbot==2.7.1",
                 # bench/player_load.py --py-spy: where Binge+ spends its time under load.
                 "py-spy>=0.4",
                 # bench/stream_http.py's aiohttp peer.
                 "aiohttp>=3.9"],
    },
    entry_points={
        "console_scripts": [
            "binge-server=server:main",
            "binge-ingest=media.ingest:main",
        ],
    },
)
