"""Dockerized repository environments: images, containers, a persistent shell, tools and grading."""
