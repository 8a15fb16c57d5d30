//! Giving back the shared memory a burst touched: each producer, periodically, reclaims
//! the slots its peer returned and lets its pool release the pages of the free ones a past
//! burst touched, once the load is light ([`SlotPool::trim`](crate::arena::SlotPool::trim)).

use super::{ChannelError, FrontChannel, WorkerChannel};

impl FrontChannel {
    /// Reclaims the returned request slots, then releases the pages a past burst touched
    /// once the load is light ([`SlotPool::trim`](crate::arena::SlotPool::trim)); how many slots went. It reads the
    /// worker's return ring, so a corrupt one is seen here too, without a request.
    pub fn trim_slots(&mut self) -> Result<u32, ChannelError> {
        while let Some(raw) = self.request_returns.pop()? {
            self.req_pool.give_back(raw)?;
        }
        Ok(self.req_pool.trim(&self.req_arena))
    }
}

impl WorkerChannel {
    /// Reclaims the returned response slots, then releases the pages a past burst
    /// touched once the load is light ([`SlotPool::trim`](crate::arena::SlotPool::trim)); how many slots went.
    pub fn trim_slots(&mut self) -> Result<u32, ChannelError> {
        while let Some(raw) = self.response_returns.pop()? {
            self.resp_pool.give_back(raw)?;
        }
        Ok(self.resp_pool.trim(&self.resp_arena))
    }
}
