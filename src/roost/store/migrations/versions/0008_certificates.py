"""certificates (issue 5): the platform CA and device certificates

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "certificate_authorities",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("sealed_key", sa.Text(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificate_authorities")),
    )
    op.create_table(
        "device_certificates",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=48), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("key_generated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("not_before", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("not_after", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_device_certificates_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_device_certificates_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_certificates")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_device_certificates_fingerprint")),
    )
    with op.batch_alter_table("device_certificates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_certificates_device_pk"), ["device_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_device_certificates_revoked_at"), ["revoked_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("device_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_certificates_revoked_at"))
        batch_op.drop_index(batch_op.f("ix_device_certificates_device_pk"))
    op.drop_table("device_certificates")
    op.drop_table("certificate_authorities")
