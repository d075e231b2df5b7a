"""One user per username whatever its case, on PostgreSQL too: a unique index on ``lower(username)``.

SQLite's ``COLLATE NOCASE`` already keeps "Alice" and "alice" apart as one
name; PostgreSQL compares text exactly, so this index does it there. Lookups
by name compare ``lower(username)`` and use it on both back-ends.
"""

import sqlalchemy as sa
from alembic import op

revision = "mu0002"
down_revision = "mu0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("mu_users_username_folded", "mu_users", [sa.text("lower(username)")], unique=True,
                    if_not_exists=True)


def downgrade() -> None:
    op.drop_index("mu_users_username_folded", "mu_users")
