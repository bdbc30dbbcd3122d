"""The supervisor: one long-lived, single-threaded process per engine root that forks the
containers through runtime/, is their subreaper, holds their stdio, writes their logs and exits."""
