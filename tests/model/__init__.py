"""Tests of the CIM model: the MOF, its compiled classes, the mock playground and the docs."""
