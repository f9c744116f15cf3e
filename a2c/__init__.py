"""a2c: distributed Advantage Actor-Critic, Kubernetes-native.

Data flow: player -> rollout upload (service) -> trainer DDP step (learner) -> weights -> player.
"""

__version__ = "0.1.0"
